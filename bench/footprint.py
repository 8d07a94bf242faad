"""Benchmark 4, footprint: RSS and CPU of the exporter probing 35 regions x 2 kinds every 15 s, beside
blackbox_exporter probing the same regions the same way, both at once, for three minutes.

Both run in the client namespace. Blackbox is driven like Prometheus drives it: each of its 70 targets
(35 x tcp_connect, 35 x https_403) is asked for once per 15 s at a fixed offset within the interval (Prometheus
spreads targets over the interval the same way). The exporter runs its own schedule (interval 15 s, timeout 5 s,
the default concurrency) and is scraped once per 15 s with Prometheus's headers, so both pay for serving what
they measured. CPU per probe is counted over the steady-state window from the first scrape of the exporter (after
its first sweep) to the last one; CPU from process start is reported too.

    .venv/bin/python -m bench.footprint [--duration 180]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import blackbox
from bench.common import (
    OUT_DIR,
    BenchResult,
    ExporterProcess,
    Goal,
    command_line,
    cpu_seconds,
    default_concurrency,
    exporter_config,
    http_get,
    md_table,
    parse_samples,
    peak_rss_bytes,
    rss_bytes,
    simulated_regions,
    start_simulator,
    sum_samples,
)
from bench.report import SECTIONS, section_header
from bench.scrape import PROMETHEUS_HEADERS
from region_latency.netsim import RegionSimulator

REGIONS = 35
INTERVAL = 15.0
DURATION = 180.0
EXPORTER_PORT = 9730
RSS_GOAL = 60 * 2**20


class Meter:
    """Samples RSS of both processes every second (reading /proc needs no namespace)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, int]:
        now = {name: rss_bytes(pid) for name, pid in self.pids.items()}
        self.samples.append((time.monotonic(), now))
        return now

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def snapshot(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: {"cpu": cpu_seconds(pid), "rss": rss_bytes(pid), "at": time.monotonic()}
            for name, pid in pids.items()}


def drive(sim: RegionSimulator, box: blackbox.Blackbox, exporter: ExporterProcess, duration: float,
          pids: dict[str, int]) -> dict[str, Any]:
    """Prometheus-like schedule for blackbox's 70 targets and the exporter's /metrics; on a namespace thread."""
    targets = []
    for region in sim.regions:
        targets.append((blackbox.tcp_target(sim.address(region)), blackbox.TCP_MODULE))
        targets.append((sim.endpoint_url(region), blackbox.HTTPS_MODULE))
    cycles = max(2, int(duration // INTERVAL))
    bb_done: list[tuple[float, bool]] = []
    marks: list[dict[str, Any]] = []
    lock = threading.Lock()

    def ask_blackbox(target: str, module: str) -> None:
        try:
            values, _ = blackbox.probe(box.port, target, module)
            ok = values.get("probe_success") == 1.0
        except OSError:
            ok = False
        with lock:
            bb_done.append((time.monotonic(), ok))

    def scrape_exporter(cycle: int) -> None:
        status, body = http_get(exporter.port, "/metrics", headers=PROMETHEUS_HEADERS)
        taken = snapshot(pids)  # right after the scrape: a window's edges each include exactly one
        if status != 200:
            raise RuntimeError(f"exporter /metrics answered {status}")
        text = gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
        samples = parse_samples(text)
        with lock:
            marks.append({"cycle": cycle, "snapshot": taken, "ours_probes": sum_samples(
                samples, "region_latency_probes_total"), "ours_failures": sum_samples(
                samples, "region_latency_probe_failures_total"), "blackbox_probes": len(bb_done),
                "blackbox_failed": sum(1 for _, ok in bb_done if not ok)})

    started = time.monotonic()
    offsets = [INTERVAL * i / len(targets) for i in range(len(targets))]
    with ThreadPoolExecutor(max_workers=48, thread_name_prefix="prometheus") as pool:
        for cycle in range(cycles):
            base = started + cycle * INTERVAL
            for (target, module), offset in zip(targets, offsets, strict=True):
                _sleep_until(base + offset)
                pool.submit(ask_blackbox, target, module)
            _sleep_until(base + INTERVAL - 0.5)  # the exporter's scrape closes each cycle
            scrape_exporter(cycle)
        _sleep_until(started + cycles * INTERVAL)
    return {"marks": marks, "cycles": cycles, "blackbox_results": len(bb_done)}


def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run(duration: float = DURATION) -> BenchResult:
    started = time.monotonic()
    workdir = OUT_DIR / "footprint"
    sim = start_simulator(simulated_regions(REGIONS))
    box = exporter = meter = None
    try:
        box = blackbox.Blackbox(sim, workdir)
        sim.call_in_client(box.wait_ready)
        pids = {"exporter": 0, "blackbox": box.pid}
        idle = {"blackbox": rss_bytes(box.pid)}
        exporter = ExporterProcess(sim, exporter_config(sim, port=EXPORTER_PORT, interval="15s", timeout="5s"),
                                   workdir)
        sim.call_in_client(exporter.wait_healthy)
        pids["exporter"] = exporter.pid
        idle["exporter"] = rss_bytes(exporter.pid)
        at_start = snapshot(pids)
        meter = Meter(pids)
        meter.start()
        driven = sim.call_in_client(drive, sim, box, exporter, duration, pids)
        meter.stop()
        end = snapshot(pids)
        peaks = {name: peak_rss_bytes(pid) for name, pid in pids.items()}
    finally:
        if meter is not None:
            meter.stop()
        if exporter is not None:
            exporter.stop()
        if box is not None:
            box.stop()
        sim.close()
    return report(driven, idle, at_start, end, peaks, meter.samples if meter else [], duration,
                  time.monotonic() - started)


def report(driven: dict[str, Any], idle: dict[str, int], at_start: dict[str, dict[str, float]],
           end: dict[str, dict[str, float]], peaks: dict[str, int], samples: list[tuple[float, dict[str, int]]],
           duration: float, seconds: float) -> BenchResult:
    marks = driven["marks"]
    first, last = marks[0], marks[-1]
    window = last["snapshot"]["exporter"]["at"] - first["snapshot"]["exporter"]["at"]
    probes = {"exporter": last["ours_probes"] - first["ours_probes"],
              "blackbox": last["blackbox_probes"] - first["blackbox_probes"]}
    totals = {"exporter": last["ours_probes"], "blackbox": last["blackbox_probes"]}
    stats: dict[str, Any] = {}
    rows = []
    for name in ("exporter", "blackbox"):
        cpu_window = last["snapshot"][name]["cpu"] - first["snapshot"][name]["cpu"]
        per_probe = cpu_window / probes[name] if probes[name] else float("nan")
        per_probe_all = end[name]["cpu"] / totals[name] if totals[name] else float("nan")
        max_rss = max((s[name] for _, s in samples), default=end[name]["rss"])
        stats[name] = {"cpu_window": cpu_window, "probes_window": probes[name], "cpu_per_probe": per_probe,
                       "cpu_total": end[name]["cpu"], "probes_total": totals[name],
                       "cpu_per_probe_from_start": per_probe_all, "rss_idle": idle[name],
                       "rss_end": end[name]["rss"], "rss_max_sampled": max_rss, "rss_peak": peaks[name],
                       "cpu_at_start": at_start[name]["cpu"]}
        rows.append([name, f"{idle[name] / 2**20:.1f}", f"{end[name]['rss'] / 2**20:.1f}",
                     f"{peaks[name] / 2**20:.1f}", f"{at_start[name]['cpu']:.2f}", f"{totals[name]:.0f}",
                     f"{probes[name]:.0f}", f"{cpu_window:.2f}", f"{per_probe * 1e3:.2f}",
                     f"{per_probe_all * 1e3:.2f}", f"{cpu_window / window * 100:.1f} %"])
    ours, theirs = stats["exporter"], stats["blackbox"]
    ratio = ours["cpu_per_probe"] / theirs["cpu_per_probe"]
    goals = [
        Goal(what="footprint, CPU per probe (steady state)", goal="≤ blackbox_exporter's",
             measured=f"{ours['cpu_per_probe'] * 1e3:.2f} ms vs {theirs['cpu_per_probe'] * 1e3:.2f} ms "
                      f"({ratio:.2f}x)", passed=ours["cpu_per_probe"] <= theirs["cpu_per_probe"]),
        Goal(what="footprint, exporter RSS", goal="≤ 60 MB",
             measured=f"{ours['rss_end'] / 2**20:.1f} MB after {ours['probes_total']:.0f} probes (peak "
                      f"{ours['rss_peak'] / 2**20:.1f}, at start {ours['rss_idle'] / 2**20:.1f}); blackbox "
                      f"{theirs['rss_end'] / 2**20:.1f} MB", passed=max(ours["rss_end"], ours["rss_peak"]) <= RSS_GOAL),
    ]
    failures = (f"Failed probes: exporter {last['ours_failures']:.0f}, blackbox {last['blackbox_failed']}."
                if last["ours_failures"] or last["blackbox_failed"] else "No probe failed.")
    body = "\n".join([
        section_header(command_line()),
        f"{REGIONS} simulated regions (RTT 10-300 ms) x 2 probe kinds every {INTERVAL:g} s for {duration:g} s, both "
        "processes at once in the client namespace. Blackbox is asked for its 70 targets at fixed offsets spread "
        f"over each interval (like Prometheus); the exporter runs its own schedule (default concurrency "
        f"{default_concurrency()}) and "
        f"is scraped once per interval. Steady-state window: {window:.0f} s, from the exporter's first scrape "
        f"(after its first sweep) to its last. {failures} RSS \"idle\" is blackbox before its first probe, and "
        "the exporter when it first answers /-/healthy (its probes start within a second of that). CPU at start "
        "is what the process used until then (imports, configuration).",
        "",
        md_table(["process", "RSS idle MB", "RSS end MB", "RSS peak MB", "CPU s at start", "probes total",
                  "probes in window", "CPU s in window", "CPU ms / probe", "CPU ms / probe incl. start",
                  "CPU share of one core"], rows),
    ])
    return BenchResult(key="footprint", title=SECTIONS["footprint"], body=body, goals=goals, seconds=seconds,
                       raw={"stats": stats, "marks": marks, "rss_samples": samples, "window": window})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds of probing (default 180)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    from bench.report import finish

    return finish(run(duration=args.duration), write=not args.no_report)


if __name__ == "__main__":
    sys.exit(main())
