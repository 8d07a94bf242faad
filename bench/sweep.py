"""Benchmark 2, sweep time: probing 35 regions once, all at once versus one at a time.

35 simulated regions with true RTTs spread evenly over 10-300 ms. `run_sweep` (what the CLI's one-shot probe and
a scheduler round do) runs every region's probe once with concurrency 35 (one worker per region) and 1 (and
the exporter's default `concurrency` when that is below 35); the `Scheduler` itself (jitter off) is timed
from `set_jobs` to `sweep_done`. The floor of a sweep is its slowest probe: 1 RTT of the slowest region for tcp
(300 ms), 3 RTT for https (TCP handshake + TLS 1.3 handshake + one request: 900 ms). Goal: a concurrent sweep
within 1.2 x that.

The probes' errors against the true RTT are reported too: 35 probes in one Python process share one GIL, and a
probe whose answer arrives while another thread holds it is timestamped late.

    .venv/bin/python -m bench.sweep
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import (
    BenchResult,
    Goal,
    bench_main,
    command_line,
    default_concurrency,
    md_table,
    median,
    ms,
    percentile,
    simulated_regions,
    start_simulator,
)
from bench.report import SECTIONS, section_header
from region_latency.probes import Target, get_probe
from region_latency.probes.base import ProbeResult
from region_latency.scheduler import Job, Scheduler, run_sweep
from region_latency_devkit.netsim import RegionSimulator

REGIONS = 35
RTT_MULTIPLE = {"tcp": 1, "https": 3}  # a probe's duration floor, in RTTs of its region
GOAL_FACTOR = 1.2


def make_jobs(sim: RegionSimulator, kind: str) -> list[Job]:
    probe = get_probe(kind)
    options = {"ca_file": str(sim.ca_file)} if kind == "https" else {}
    return [Job(key=f"{kind}/{region}", target=Target("bedrock-runtime", region, sim.endpoint_url(region), options),
                probe=probe, interval=15.0, timeout=5.0, on_result=lambda _t, _r: None)
            for region in sim.regions]


def timed_sweep(jobs: Sequence[Job], concurrency: int) -> tuple[float, list[ProbeResult]]:
    started = time.perf_counter()
    results = run_sweep(jobs, concurrency)
    return time.perf_counter() - started, results


def timed_scheduler(jobs: Sequence[Job]) -> float:
    """Seconds from handing the jobs to a jitter-free Scheduler until every job has completed once."""
    scheduler = Scheduler(concurrency=len(jobs), jitter=0.0)
    scheduler.start()
    try:
        started = time.perf_counter()
        scheduler.set_jobs(jobs)
        while not scheduler.sweep_done():
            time.sleep(0.0005)
        return time.perf_counter() - started
    finally:
        scheduler.stop(timeout=10)


def measure(sim: RegionSimulator, repeats: int) -> dict[str, Any]:
    """Every timing of both kinds; runs on a thread in the client namespace (pool threads inherit it)."""
    rtt = {region: sim.spec(region).rtt for region in sim.regions}
    out: dict[str, Any] = {}
    for kind in ("tcp", "https"):
        jobs = make_jobs(sim, kind)
        run_sweep(jobs[:2], 2)  # warm-up: imports, SSL context
        phase = "connect" if kind == "tcp" else "ttfb"
        data: dict[str, Any] = {}
        default = default_concurrency()
        modes = [("all at once", len(jobs), repeats), ("one at a time", 1, 1)]
        if default < len(jobs):
            modes.insert(1, (f"config default {default}", default, max(2, repeats // 2)))
        for label, concurrency, count in modes:
            times, errs, failed = [], [], 0
            for _ in range(count):
                seconds, results = timed_sweep(jobs, concurrency)
                times.append(seconds)
                for job, result in zip(jobs, results, strict=True):
                    if result.ok and phase in result.phases:
                        errs.append(result.phases[phase] - rtt[job.target.region])
                    else:
                        failed += 1
            data[label] = {"concurrency": concurrency, "times": times, "errors": errs, "failed": failed}
        data["scheduler"] = {"concurrency": len(jobs), "times": [timed_scheduler(jobs) for _ in range(repeats)]}
        out[kind] = data
    return out


def run(repeats: int = 5, regions: int = REGIONS) -> BenchResult:
    started = time.monotonic()
    specs = simulated_regions(regions)
    sim = start_simulator(specs)
    try:
        raw = sim.call_in_client(measure, sim, repeats)
    finally:
        sim.close()
    slowest = max(spec.rtt for spec in specs.values())
    total_rtt = sum(spec.rtt for spec in specs.values())
    return report(raw, slowest, total_rtt, regions, time.monotonic() - started)


def report(raw: dict[str, Any], slowest: float, total_rtt: float, regions: int, seconds: float) -> BenchResult:
    rows, goals = [], []
    for kind, data in raw.items():
        floor = RTT_MULTIPLE[kind] * slowest
        sequential = median(data["one at a time"]["times"])
        for label, entry in data.items():
            t = median(entry["times"])
            errs = entry.get("errors", [])
            phase = "connect" if kind == "tcp" else "ttfb"
            rows.append([kind, label, entry["concurrency"], len(entry["times"]), ms(t, 1), f"{t / floor:.2f}",
                         f"{sequential / t:.1f}x",
                         f"{phase} {ms(median(errs))} / {ms(percentile(errs, 99))}" if errs else "-",
                         entry.get("failed", 0)])
        concurrent = median(data["all at once"]["times"])
        goals.append(Goal(
            what=f"sweep, {kind}, {regions} regions at once",
            goal=f"≤ {GOAL_FACTOR} x slowest probe floor ({RTT_MULTIPLE[kind]} x {slowest * 1e3:g} ms = "
                 f"{floor * 1e3:g} ms)",
            measured=f"{ms(concurrent, 1)} ms = {concurrent / floor:.2f} x; one at a time {ms(sequential, 0)} ms "
                     f"({sequential / concurrent:.1f}x slower)",
            passed=concurrent <= GOAL_FACTOR * floor))
        sched = median(data["scheduler"]["times"])
        goals.append(Goal(
            what=f"sweep, {kind}, Scheduler (jitter 0) to sweep_done",
            goal=f"≤ {GOAL_FACTOR} x {floor * 1e3:g} ms", measured=f"{ms(sched, 1)} ms = {sched / floor:.2f} x",
            passed=sched <= GOAL_FACTOR * floor))
    body = "\n".join([
        section_header(command_line()),
        f"{regions} simulated regions, true RTT spread evenly over 10-{slowest * 1e3:g} ms (sum "
        f"{total_rtt:.2f} s). Floor of a sweep = its slowest probe: tcp 1 RTT = {slowest * 1e3:g} ms, https "
        f"3 RTT = {3 * slowest * 1e3:g} ms (TCP + TLS 1.3 handshakes + one request). `run_sweep` at concurrency "
        f"{regions} and 1 (and the config default {default_concurrency()} when that is lower); "
        "`Scheduler(jitter=0)` from `set_jobs` to `sweep_done`. "
        "Times are medians over the repeats. The last column is the probes' own error against the true RTT "
        "(median / p99, ms) in those sweeps: all probes of a sweep share one Python process and its GIL.",
        "",
        md_table(["probe", "mode", "concurrency", "sweeps", "median ms", "x floor", "speed-up vs one at a time",
                  "probe error median / p99 ms", "failed"], rows),
    ])
    return BenchResult(key="sweep", title=SECTIONS["sweep"], body=body, goals=goals, seconds=seconds, raw=raw)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, module="bench.sweep", doc=__doc__,
                      option=("--repeats", 5, "concurrent sweeps per kind"),
                      run=lambda repeats: run(repeats=repeats))


if __name__ == "__main__":
    sys.exit(main())
