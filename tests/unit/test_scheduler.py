"""The scheduler: once per interval, bounded concurrency, no self-overlap, slow regions isolated."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

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


class FakeClock:
    """The scheduler's clock, moved by the test: no sleeps, no races with a loaded machine."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EdgeRandom(random.Random):
    """uniform(a, b) returns a or b (alternating when `alternate`): the jitter's extremes, on purpose."""

    def __init__(self, pick: str = "high", alternate: bool = False) -> None:
        super().__init__(0)
        self.pick, self.alternate = pick, alternate
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        value = b if self.pick == "high" else a
        if self.alternate:
            self.pick = "low" if self.pick == "high" else "high"
        return value


class Gate:
    """A probe that blocks until released, counting starts per region."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.any_started = threading.Event()

    def probe(self, t: Target, timeout: float) -> ProbeResult:
        with self.lock:
            self.started[t.region] += 1
        self.any_started.set()
        self.release.wait(5)
        return ProbeResult(latency=0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def run_and_settle(scheduler: Scheduler) -> None:
    """One scheduler step, then wait until every probe it started has finished (off the fake clock)."""
    scheduler.run_pending()
    wait_until(lambda: not scheduler.in_flight())


def test_first_runs_spread_over_at_most_the_jitter_or_a_second() -> None:
    clock, rng = FakeClock(), EdgeRandom("high")
    scheduler = Scheduler(concurrency=2, jitter=0.1, clock=clock, rng=rng)
    scheduler.set_jobs([Job("t/a", target("a"), Recorder().probe_sleeping({}), 5.0, 1.0, Recorder().on_result),
                        Job("t/b", target("b"), Recorder().probe_sleeping({}), 30.0, 1.0, Recorder().on_result)])
    assert rng.calls == [(0, 0.5), (0, 1.0)]  # 10 % of 5 s; 10 % of 30 s capped at 1 s
    assert scheduler.due_times() == {"t/a": 1000.5, "t/b": 1001.0}
    scheduler.stop()


def test_jitter_lands_around_the_nominal_slot_and_never_accumulates() -> None:
    clock, rng = FakeClock(), EdgeRandom("high", alternate=True)
    rec = Recorder()
    scheduler = Scheduler(concurrency=2, jitter=0.1, clock=clock, rng=rng)
    scheduler.set_jobs([Job("t/a", target("a"), rec.probe_sleeping({}), 10.0, 1.0, rec.on_result)])
    first = scheduler.due_times()["t/a"]
    assert first == 1001.0  # uniform(0, min(10 * 0.1, 1)) -> its high end
    dues = []
    for _ in range(4):
        clock.now = scheduler.due_times()["t/a"]
        run_and_settle(scheduler)
        dues.append(scheduler.due_times()["t/a"])
    # slots at first + 10 k, each off by -/+ 10 % of the interval, alternating: the offset never carries over
    assert dues == pytest.approx([first + 10 - 1, first + 20 + 1, first + 30 - 1, first + 40 + 1])
    assert all((a, b) == (-0.1, 0.1) for a, b in rng.calls[1:])
    wait_until(lambda: len(rec.results) == 4)
    assert scheduler.stop(timeout=2)


def test_a_process_that_fell_behind_restarts_its_cadence_instead_of_bursting() -> None:
    clock = FakeClock()
    rec = Recorder()
    scheduler = Scheduler(concurrency=2, jitter=0.0, clock=clock)
    scheduler.set_jobs([Job("t/a", target("a"), rec.probe_sleeping({}), 10.0, 1.0, rec.on_result)])
    clock.now += 95  # the process stalled for nine intervals
    run_and_settle(scheduler)
    assert scheduler.due_times() == {"t/a": pytest.approx(clock.now + 10)}  # one run, then every 10 s from now
    wait_until(lambda: len(rec.results) == 1)
    assert scheduler.stop(timeout=2)


def test_set_jobs_keeps_the_slots_of_kept_jobs_and_schedules_new_or_changed_ones_now() -> None:
    clock, rng = FakeClock(), EdgeRandom("low")
    rec = Recorder()
    probe = rec.probe_sleeping({})
    scheduler = Scheduler(concurrency=2, jitter=0.1, clock=clock, rng=rng)
    jobs = [Job(f"t/{r}", target(r), probe, 10.0, 1.0, rec.on_result) for r in ("a", "b", "c")]
    scheduler.set_jobs(jobs)
    clock.now += 1
    run_and_settle(scheduler)  # all three ran at 1000 (low end: no offset)
    # their own slots from then on: 1/6, 3/6 and 5/6 of the way through one interval from 1005 (10 % jitter: -1)
    assert scheduler.due_times() == pytest.approx({"t/a": 1005 + 10 / 6 - 1, "t/b": 1009.0, "t/c": 1015 - 10 / 6 - 1})
    clock.now = 1004.0
    scheduler.set_jobs([
        jobs[0],  # kept as it was: keeps its slot
        Job("t/b", target("b"), probe, 20.0, 1.0, rec.on_result),  # interval changed: rescheduled now
        Job("t/d", target("d"), probe, 10.0, 1.0, rec.on_result),  # new: now
    ])  # t/c dropped
    assert scheduler.due_times() == pytest.approx({"t/a": 1005 + 10 / 6 - 1, "t/b": 1004.0, "t/d": 1004.0})
    run_and_settle(scheduler)
    wait_until(lambda: len(rec.results) == 5)
    assert sorted(region for region, _ in rec.results) == ["a", "b", "b", "c", "d"]
    clock.now = 1006.0
    run_and_settle(scheduler)
    wait_until(lambda: len(rec.results) == 6)
    assert scheduler.due_times()["t/a"] == pytest.approx(1015 + 10 / 6 - 1)  # nominal slot kept through set_jobs
    assert scheduler.stop(timeout=2)


def test_new_jobs_get_slots_spread_over_their_interval() -> None:
    """1,000 jobs added at once all run within the first second (the first sweep), then on slots spread evenly
    over the interval: no second of the next interval starts more than its share (plus the jitter's noise)."""
    clock, rng = FakeClock(), EdgeRandom("low")
    rec = Recorder()
    scheduler = Scheduler(concurrency=4, jitter=0.0, clock=clock, rng=rng)
    scheduler.set_jobs([Job(f"t/{i}", target(str(i)), rec.probe_sleeping({}), 15.0, 5.0, rec.on_result)
                        for i in range(1000)])
    assert max(scheduler.due_times().values()) <= clock.now + 1.0
    run_and_settle(scheduler)
    wait_until(lambda: len(rec.results) == 1000)
    per_second = Counter(int(due - clock.now) for due in scheduler.due_times().values())
    assert min(per_second) >= 7 and max(per_second) <= 22  # second runs between 7.5 s and 22.5 s from the first
    assert max(per_second.values()) <= 1000 / 15 + 1
    assert scheduler.stop(timeout=5)


def test_an_overrunning_job_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    gate, rec = Gate(), Recorder()
    scheduler = Scheduler(concurrency=2, jitter=0.0, clock=clock)
    scheduler.set_jobs([Job("t/slow", target("slow"), gate.probe, 1.0, 0.9, rec.on_result)])
    with caplog.at_level("WARNING", logger="region_latency.scheduler"):
        for _ in range(5):
            scheduler.run_pending()
            wait_until(gate.any_started.is_set)
            clock.now = scheduler.due_times()["t/slow"]
        assert scheduler.skipped() == {"t/slow": 4}
        assert len([r for r in caplog.records if "still running" in r.getMessage()]) == 1
    gate.release.set()
    wait_until(scheduler.sweep_done)
    assert scheduler.stop(timeout=2)


def test_a_job_still_running_is_skipped_not_stacked_and_others_keep_their_cadence() -> None:
    clock = FakeClock()
    gate, rec = Gate(), Recorder()
    scheduler = Scheduler(concurrency=4, jitter=0.0, clock=clock)
    scheduler.set_jobs([Job("t/slow", target("slow"), gate.probe, 1.0, 0.9, rec.on_result),
                        Job("t/fast", target("fast"), rec.probe_sleeping({}), 1.0, 0.9, rec.on_result)])
    for step in range(4):
        scheduler.run_pending()
        wait_until(lambda n=step + 1: len(rec.results) == n and gate.any_started.is_set())
        clock.now = max(scheduler.due_times().values())  # both due (their slots are half an interval apart)
    assert gate.started["slow"] == 1 and scheduler.skipped() == {"t/slow": 3}
    assert not scheduler.sweep_done()  # the slow job has not finished a run yet
    gate.release.set()
    wait_until(scheduler.sweep_done)
    assert Counter(region for region, _ in rec.results) == {"fast": 4, "slow": 1}
    assert scheduler.stop(timeout=2)


def test_scheduler_thread_probes_every_job_and_stops() -> None:
    rec = Recorder()
    done = threading.Event()

    def on_result(t: Target, result: ProbeResult) -> None:
        rec.on_result(t, result)
        if len(rec.results) >= 3:
            done.set()

    scheduler = Scheduler(concurrency=2, jitter=0.0)
    scheduler.set_jobs([Job("t/a", target("a"), rec.probe_sleeping({}), 0.05, 0.04, on_result)])
    scheduler.start()
    assert done.wait(10)
    assert scheduler.stop(timeout=2)
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
    clock = FakeClock()
    rec = Recorder()
    probe = rec.probe_sleeping({})
    scheduler = Scheduler(concurrency=2, jitter=0.0, clock=clock)
    scheduler.set_jobs([Job("t/a", target("a"), probe, 1.0, 0.5, rec.on_result)])
    run_and_settle(scheduler)
    wait_until(lambda: len(rec.results) == 1)
    scheduler.set_jobs([Job("t/b", target("b"), probe, 1.0, 0.5, rec.on_result)])
    for _ in range(3):
        run_and_settle(scheduler)
        clock.now += 1.0
    wait_until(lambda: len(rec.results) == 4)
    assert scheduler.stop(timeout=2)
    assert [region for region, _ in rec.results] == ["a", "b", "b", "b"]
    assert scheduler.due_times() == {"t/b": 1003.0}


def test_invalid_concurrency() -> None:
    with pytest.raises(ValueError):
        Scheduler(concurrency=0)
