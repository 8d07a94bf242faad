"""The scheduler: once per interval, bounded concurrency, no self-overlap, slow regions isolated."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from region_latency.probes.base import ProbeFn, ProbeResult, Target
from region_latency.scheduler import Job, Scheduler, run_probe, run_sweep


def target(region: str) -> Target:
    return Target(service="bedrock", region=region, url="https://example.invalid")


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[tuple[str, ProbeResult]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def probe_sleeping(self, seconds: dict[str, float]) -> ProbeFn:
        def probe(t: Target, timeout: float) -> ProbeResult:
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            time.sleep(min(seconds.get(t.region, 0.0), timeout))
            with self.lock:
                self.in_flight -= 1
            return ProbeResult(latency=seconds.get(t.region, 0.0))
        return probe

    def on_result(self, t: Target, result: ProbeResult) -> None:
        with self.lock:
            self.results.append((t.region, result))


def test_run_sweep_runs_concurrently_and_keeps_job_order() -> None:
    rec = Recorder()
    delays = {f"r{i}": 0.2 for i in range(10)}
    probe = rec.probe_sleeping(delays)
    jobs = [Job(f"t/{r}", target(r), probe, 30, 1, rec.on_result) for r in delays]
    started = time.monotonic()
    results = run_sweep(jobs, concurrency=10)
    elapsed = time.monotonic() - started
    assert [r.latency for r in results] == [0.2] * 10
    assert len(rec.results) == 10
    assert elapsed < 1.5  # sequentially it would take 2 s; generous for a loaded machine
    assert rec.max_in_flight > 1


def test_run_sweep_respects_the_concurrency_bound() -> None:
    rec = Recorder()
    probe = rec.probe_sleeping({f"r{i}": 0.05 for i in range(12)})
    jobs = [Job(f"t/r{i}", target(f"r{i}"), probe, 30, 1, rec.on_result) for i in range(12)]
    run_sweep(jobs, concurrency=3)
    assert rec.max_in_flight <= 3


def test_a_raising_probe_becomes_an_other_failure() -> None:
    def broken(t: Target, timeout: float) -> ProbeResult:
        raise RuntimeError("bug")

    result = run_probe(broken, target("r"), 1)
    assert result.latency is None and str(result.error) == "other" and "RuntimeError" in result.detail


def test_scheduler_probes_every_job_each_interval_without_overlap() -> None:
    rec = Recorder()
    probe = rec.probe_sleeping({"fast": 0.0, "slow": 0.35})
    scheduler = Scheduler(concurrency=4, jitter=0.0)
    scheduler.set_jobs([
        Job("t/fast", target("fast"), probe, 0.1, 0.09, rec.on_result),
        Job("t/slow", target("slow"), probe, 0.1, 0.5, rec.on_result),
    ])
    scheduler.start()
    time.sleep(1.2)
    assert scheduler.stop(timeout=2)
    counts = Counter(region for region, _ in rec.results)
    assert counts["fast"] >= 5  # ~12 expected; a slow region never delays the others
    assert 1 <= counts["slow"] <= 4  # it takes 0.35 s: rounds during a run are skipped, not stacked
    assert scheduler.skipped().get("t/slow", 0) >= 2
    assert scheduler.sweep_done()


def test_stop_waits_for_in_flight_probes_within_their_timeout() -> None:
    rec = Recorder()
    probe = rec.probe_sleeping({"r": 0.3})
    scheduler = Scheduler(concurrency=2, jitter=0.0)
    scheduler.set_jobs([Job("t/r", target("r"), probe, 10, 0.5, rec.on_result)])
    scheduler.start()
    deadline = time.monotonic() + 5
    while rec.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.stop(timeout=2)
    assert [region for region, _ in rec.results] == ["r"]


def test_set_jobs_replaces_the_job_set() -> None:
    rec = Recorder()
    probe = rec.probe_sleeping({})
    scheduler = Scheduler(concurrency=2, jitter=0.0)
    scheduler.set_jobs([Job("t/a", target("a"), probe, 0.05, 0.04, rec.on_result)])
    scheduler.start()
    time.sleep(0.3)
    scheduler.set_jobs([Job("t/b", target("b"), probe, 0.05, 0.04, rec.on_result)])
    time.sleep(0.1)
    with rec.lock:
        rec.results.clear()
    time.sleep(0.3)
    scheduler.stop(timeout=2)
    regions = {region for region, _ in rec.results}
    assert regions == {"b"}


def test_invalid_concurrency() -> None:
    with pytest.raises(ValueError):
        Scheduler(concurrency=0)
