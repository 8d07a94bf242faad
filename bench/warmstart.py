"""Benchmark 5, warm start: time from process start to a served ranking, with and without a cache file.

"Served ranking" = the first /metrics answer holding a `region_latency_rank` series. The exporter probes 35
simulated regions x 2 kinds (interval 10 s, so the cache's entries stay within the ranking's 3-interval
freshness limit between runs). Without a cache the default ranking policy ranks a region only after
`min_samples` (3) samples, so the first rank can appear no sooner than 2 intervals after start plus one probe;
with a cache file written by a previous run the ranking is served as soon as the HTTP server answers.
Order: cold (writes the cache), warm x3 (each from a fresh copy of that cache), cold again.

    .venv/bin/python -m bench.warmstart
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    OUT_DIR,
    BenchResult,
    ExporterProcess,
    Goal,
    bench_main,
    command_line,
    exporter_config,
    http_get,
    md_table,
    median,
    simulated_regions,
    start_simulator,
)
from bench.report import SECTIONS, section_header
from region_latency_devkit.netsim import RegionSimulator

REGIONS = 35
INTERVAL = 10.0
PORT = 9740
WARM_RUNS = 3
POLL = 0.02


def watch(exporter: ExporterProcess, expected: int, timeout: float) -> dict[str, float]:
    """Seconds from the Popen call to: first HTTP answer, ready, first rank series, every region ranked.

    Runs on a namespace thread."""
    out: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while "all" not in out:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every region ranked within {timeout:g}s ({out}); log: {exporter.log()[-1500:]}")
        if not exporter.alive():
            raise RuntimeError(f"exporter died: {exporter.log()[-1500:]}")
        try:
            if "http" not in out:
                http_get(exporter.port, "/-/healthy", timeout=2)
                out["http"] = time.monotonic() - exporter.started_at
            if "ready" not in out and http_get(exporter.port, "/-/ready", timeout=2)[0] == 200:
                out["ready"] = time.monotonic() - exporter.started_at
            status, body = http_get(exporter.port, "/metrics", timeout=5)
            ranked = body.count(b"\nregion_latency_rank{") if status == 200 else 0
            now = time.monotonic() - exporter.started_at
            if ranked and "rank" not in out:
                out["rank"], out["ranked_first"] = now, ranked
            if ranked >= expected:
                out["all"] = now
        except OSError:
            pass
        time.sleep(POLL)
    return out


def one_run(sim: RegionSimulator, workdir: Path, name: str, cache: Path) -> dict[str, float]:
    config = exporter_config(sim, port=PORT, interval=f"{INTERVAL:g}s", timeout="5s", cache_path=cache)
    exporter = ExporterProcess(sim, config, workdir, name=name)
    try:
        return sim.call_in_client(watch, exporter, 2 * len(sim.regions), 3 * INTERVAL + 30)
    finally:
        exporter.stop()  # SIGTERM: the exporter saves its cache on the way out


def run(warm_runs: int = WARM_RUNS) -> BenchResult:
    started = time.monotonic()
    workdir = OUT_DIR / "warmstart"
    workdir.mkdir(parents=True, exist_ok=True)
    sim = start_simulator(simulated_regions(REGIONS))
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    try:
        saved = workdir / "cache-saved.json"
        for path in (saved, workdir / "cache-cold2.json"):
            path.unlink(missing_ok=True)
        runs["cold"].append(one_run(sim, workdir, "cold-1", saved))
        if not saved.exists():
            raise RuntimeError("the cold run wrote no cache file")
        for i in range(warm_runs):
            copy = workdir / f"cache-warm-{i + 1}.json"
            shutil.copyfile(saved, copy)
            runs["warm"].append(one_run(sim, workdir, f"warm-{i + 1}", copy))
        runs["cold"].append(one_run(sim, workdir, "cold-2", workdir / "cache-cold2.json"))
    finally:
        sim.close()
    return report(runs, time.monotonic() - started)


def report(runs: dict[str, list[dict[str, float]]], seconds: float) -> BenchResult:
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for kind in ("warm", "cold"):
        entries = runs[kind]
        medians[kind] = {key: median(e[key] for e in entries) for key in ("http", "ready", "rank", "all")}
        m = medians[kind]
        rows.append([f"{'with' if kind == 'warm' else 'without'} cache", len(entries), f"{m['http']:.2f}",
                     f"{m['ready']:.2f}", f"{m['rank']:.2f}", f"{median(e['ranked_first'] for e in entries):.0f}",
                     f"{m['all']:.2f}", " / ".join(f"{e['all']:.2f}" for e in entries)])
    warm, cold = medians["warm"]["all"], medians["cold"]["all"]
    goals = [Goal(what="warm start, process start to full ranking served, with a cache file",
                  goal="at the first /metrics answer (no probe needed)",
                  measured=f"{warm:.2f} s with cache vs {cold:.2f} s without ({cold / warm:.0f}x); first HTTP "
                           f"answer at {medians['warm']['http']:.2f} s",
                  passed=warm <= medians["warm"]["http"] + 0.5)]
    body = "\n".join([
        section_header(command_line()),
        f"{REGIONS} simulated regions x 2 probe kinds, interval {INTERVAL:g} s, default ranking policy "
        "(`min_samples` 3). Seconds from starting the process (`python -m region_latency serve`, imports "
        "included) to its first HTTP answer, to `/-/ready`, to the first `/metrics` holding a "
        "`region_latency_rank` series, and to the first one where all 70 regions are ranked (polled every "
        f"{POLL * 1e3:g} ms). Without a cache the floor is 2 intervals ({2 * INTERVAL:g} s) + one probe; with "
        "the cache the previous cold run saved at its SIGTERM, every region is ranked from the cache at once. "
        f"Runs in this order: cold, warm x{len(runs['warm'])} (each from a fresh copy of that cache), cold.",
        "",
        md_table(["start", "runs", "first HTTP s", "ready s", "first rank s", "rank series then",
                  "all ranked s (median)", "all ranked, each run s"], rows),
    ])
    return BenchResult(key="warmstart", title=SECTIONS["warmstart"], body=body, goals=goals, seconds=seconds,
                       raw={"runs": runs, "medians": medians})


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, module="bench.warmstart", doc=__doc__,
                      option=("--warm-runs", WARM_RUNS, "runs with a cache"),
                      run=lambda runs: run(warm_runs=runs))


if __name__ == "__main__":
    sys.exit(main())
