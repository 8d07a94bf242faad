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

import gzip
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import blackbox
from bench.common import (
    OUT_DIR,
    BenchResult,
    ExporterProcess,
    Goal,
    bench_main,
    collect_worker,
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
    start_worker,
    sum_samples,
    thread_count,
)
from bench.report import SECTIONS, section_header
from bench.scrape import PROMETHEUS_HEADERS
from region_latency_devkit.netsim import RegionSimulator

REGIONS = 35
INTERVAL = 15.0
DURATION = 180.0
EXPORTER_PORT = 9730
# A second exporter beside the first with glibc's malloc arenas capped at 2 by the environment (default: 8 per core,
# one per thread that allocates). `serve` sets the same cap itself (mallopt) when the variable is not set, so the
# pair shows how far two alike exporters differ in one run.
VARIANT = "exporter, MALLOC_ARENA_MAX=2"
VARIANT_ENV = {"MALLOC_ARENA_MAX": "2"}
RSS_GOAL = 60 * 2**20


class Meter:
    """Samples RSS of both processes every second (reading /proc needs no namespace)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.threads: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, int]:
        now = {name: rss_bytes(pid) for name, pid in self.pids.items()}
        self.samples.append((time.monotonic(), now))
        self.threads = {name: thread_count(pid) for name, pid in self.pids.items()}
        return now

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_with_children(pid: int) -> float:
    """`cpu_seconds(pid)` plus the CPU of its children it has waited for: the exporter's config loads (start-up
    and reloads) run in a short-lived child process (region_latency.resolve), and that CPU is the exporter's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def snapshot(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: {"cpu": cpu_with_children(pid), "rss": rss_bytes(pid), "at": time.monotonic(),
                   "threads": thread_count(pid)} for name, pid in pids.items()}


def drive(sim: RegionSimulator, box: blackbox.Blackbox, exporters: dict[str, ExporterProcess], duration: float,
          pids: dict[str, int]) -> dict[str, Any]:
    """Prometheus-like schedule for blackbox's 70 targets and the exporters' /metrics; on a namespace thread."""
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

    def scrape_exporters(cycle: int) -> None:
        probes, failures = {}, {}
        for name, exporter in exporters.items():
            status, body = http_get(exporter.port, "/metrics", headers=PROMETHEUS_HEADERS)
            if status != 200:
                raise RuntimeError(f"{name} /metrics answered {status}")
            text = gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
            samples = parse_samples(text)
            probes[name] = sum_samples(samples, "region_latency_probes_total")
            failures[name] = sum_samples(samples, "region_latency_probe_failures_total")
        taken = snapshot(pids)  # right after the scrapes: a window's edges each include exactly one
        with lock:
            probes["blackbox"] = len(bb_done)
            failures["blackbox"] = sum(1 for _, ok in bb_done if not ok)
            marks.append({"cycle": cycle, "snapshot": taken, "probes": probes, "failures": failures})

    started = time.monotonic()
    offsets = [INTERVAL * i / len(targets) for i in range(len(targets))]
    with ThreadPoolExecutor(max_workers=48, thread_name_prefix="prometheus") as pool:
        for cycle in range(cycles):
            base = started + cycle * INTERVAL
            for (target, module), offset in zip(targets, offsets, strict=True):
                _sleep_until(base + offset)
                pool.submit(ask_blackbox, target, module)
            _sleep_until(base + INTERVAL - 0.5)  # the exporters' scrape closes each cycle
            scrape_exporters(cycle)
        _sleep_until(started + cycles * INTERVAL)
    return {"marks": marks, "cycles": cycles, "blackbox_results": len(bb_done)}


def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# -- where the CPU and the memory go ---------------------------------------------------------------------------------

KIND_PROBES = 100


def worker(payload: dict[str, Any]) -> dict[str, Any]:
    """CPU per probe by kind, sequentially against the fastest region: ours measured in this process
    (`time.process_time`), blackbox from its /proc counters around the same number of /probe requests."""
    from region_latency.probes import Target, get_probe

    out: dict[str, Any] = {}
    n = payload["n"]
    for kind in ("tcp", "https"):
        probe = get_probe(kind)
        options = {"ca_file": payload["ca_file"]} if kind == "https" else {}
        target = Target("bedrock-runtime", "r", payload["url"], options)
        probe(target, 5.0)  # warm-up: imports, SSL context
        started = time.process_time()
        for _ in range(n):
            probe(target, 5.0)
        ours = (time.process_time() - started) / n
        bb_target = blackbox.tcp_target(payload["address"]) if kind == "tcp" else payload["url"]
        module = blackbox.TCP_MODULE if kind == "tcp" else blackbox.HTTPS_MODULE
        blackbox.probe(payload["bb_port"], bb_target, module)
        before = cpu_seconds(payload["bb_pid"])
        for _ in range(n):
            blackbox.probe(payload["bb_port"], bb_target, module)
        theirs = (cpu_seconds(payload["bb_pid"]) - before) / n
        out[kind] = {"ours": ours, "blackbox": theirs}
    return out


IMPORT_STEPS: list[tuple[str, str]] = [
    ("python interpreter", "pass"),
    ("+ ssl, http.server, email (what prometheus_client imports)", "import ssl, http.server, email.utils"),
    ("+ prometheus_client", "import prometheus_client"),
    ("+ pydantic, yaml, click", "import pydantic, yaml, click"),
    ("+ h11, certifi CA bundle loaded",
     "import h11, certifi; ssl.create_default_context(cafile=certifi.where())"),
    ("+ all exporter modules (region_latency.app, config, probes)",
     "import region_latency.app, region_latency.cli, region_latency.resolve, region_latency.probes.tcp, "
     "region_latency.probes.https"),
    ("+ Exporter(config) built, nothing started (regions resolved in a child process, as `serve` does)",
     "from region_latency.app import ConfigSource, Exporter; Exporter(ConfigSource(CONFIG, None, None))"),
    ("for comparison, not in `serve`: + botocore imported, endpoint data loaded (resolving in-process, as "
     "`check-config`, `regions` and `probe` do; a target with the `api` probe imports botocore too)",
     "from region_latency.regions import partition_regions, endpoint_url; partition_regions('aws'); "
     "endpoint_url('bedrock-runtime', 'us-east-1')"),
]
_PRINT_RSS = "\nimport re\nprint(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def import_rss(config_path: str) -> list[tuple[str, float]]:
    """RSS of a fresh interpreter after each cumulative step: where the exporter's baseline memory comes from."""
    out = []
    statements = []
    for label, statement in IMPORT_STEPS:
        statements.append(statement)
        code = f"CONFIG = {config_path!r}\n" + "\n".join(statements) + _PRINT_RSS
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
        out.append((label, int(proc.stdout.strip()) / 1024 if proc.returncode == 0 else float("nan")))
    return out


def run(duration: float = DURATION) -> BenchResult:
    started = time.monotonic()
    workdir = OUT_DIR / "footprint"
    sim = start_simulator(simulated_regions(REGIONS))
    box = meter = None
    exporters: dict[str, ExporterProcess] = {}
    try:
        box = blackbox.Blackbox(sim, workdir)
        sim.call_in_client(box.wait_ready)
        pids = {"blackbox": box.pid}
        idle = {"blackbox": rss_bytes(box.pid)}
        for i, (name, env) in enumerate((("exporter", {}), (VARIANT, VARIANT_ENV))):
            config = exporter_config(sim, port=EXPORTER_PORT + i, interval="15s", timeout="5s")
            exporters[name] = ExporterProcess(sim, config, workdir, name=f"exporter-{i}", env=env)
        for name, exporter in exporters.items():
            sim.call_in_client(exporter.wait_healthy)
            pids[name] = exporter.pid
            idle[name] = rss_bytes(exporter.pid)
        at_start = snapshot(pids)
        meter = Meter(pids)
        meter.start()
        driven = sim.call_in_client(drive, sim, box, exporters, duration, pids)
        meter.stop()
        end = snapshot(pids)
        peaks = {name: peak_rss_bytes(pid) for name, pid in pids.items()}
        for exporter in exporters.values():
            exporter.stop()
        fastest = sim.regions[0]
        payload = {"n": KIND_PROBES, "url": sim.endpoint_url(fastest), "address": sim.address(fastest),
                   "ca_file": str(sim.ca_file), "bb_port": box.port, "bb_pid": box.pid}
        log = workdir / "per-kind.log"
        per_kind = collect_worker(start_worker(sim, "bench.footprint", payload, log), log, timeout=120)
        quiet = workdir / "exporter-unstarted.yaml"  # same targets, any free port: it is only built
        quiet.write_text(exporters["exporter"].config_path.read_text().replace(
            f"127.0.0.1:{EXPORTER_PORT}", "127.0.0.1:0"))
        imports = import_rss(str(quiet))
    finally:
        if meter is not None:
            meter.stop()
        for exporter in exporters.values():
            exporter.stop()
        if box is not None:
            box.stop()
        sim.close()
    return report(driven, idle, at_start, end, peaks, meter.samples if meter else [], duration, per_kind, imports,
                  time.monotonic() - started)


def report(driven: dict[str, Any], idle: dict[str, int], at_start: dict[str, dict[str, float]],
           end: dict[str, dict[str, float]], peaks: dict[str, int], samples: list[tuple[float, dict[str, int]]],
           duration: float, per_kind: dict[str, Any], imports: list[tuple[str, float]], seconds: float) -> BenchResult:
    marks = driven["marks"]
    first, last = marks[0], marks[-1]
    names = ["exporter", VARIANT, "blackbox"]
    window = last["snapshot"]["exporter"]["at"] - first["snapshot"]["exporter"]["at"]
    probes = {name: last["probes"][name] - first["probes"][name] for name in names}
    totals = {name: last["probes"][name] for name in names}
    stats: dict[str, Any] = {}
    rows = []
    for name in names:
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
                     f"{per_probe_all * 1e3:.2f}", f"{cpu_window / window * 100:.1f} %",
                     f"{at_start[name]['threads']:.0f} / {end[name]['threads']:.0f}"])
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
    growth = ""
    if len(samples) > 20:
        (t0, r0), (t1, r1) = samples[len(samples) // 4], samples[-1]
        parts = []
        for name in names:
            grown = r1[name] - r0[name]
            probes_then = max(1.0, probes[name] * (t1 - t0) / window)
            parts.append(f"{name} {grown / 2**20:+.1f} MB (~{grown / 1024 / probes_then:.1f} KB per probe)")
        growth = f" RSS growth over the last {t1 - t0:.0f} s: " + ", ".join(parts) + "."
    failed = {name: last["failures"][name] for name in names}
    failures = (f"Failed probes: {failed}." if any(failed.values()) else "No probe failed.")
    body = "\n".join([
        section_header(command_line()),
        f"{REGIONS} simulated regions (RTT 10-300 ms) x 2 probe kinds every {INTERVAL:g} s for {duration:g} s, all "
        "processes at once in the client namespace. Blackbox is asked for its 70 targets at fixed offsets spread "
        f"over each interval (like Prometheus); the exporter runs its own schedule (default concurrency "
        f"{default_concurrency()}) and is scraped once per interval. A second, identical exporter runs beside it "
        "with `MALLOC_ARENA_MAX=2` in its environment; `serve` caps glibc's malloc arenas at 2 itself (mallopt) "
        "unless that variable is set, so the two run alike and their difference is the run-to-run spread (goals "
        "are judged on the first, as shipped). "
        f"Steady-state window: {window:.0f} s, from the exporters' first scrape (after their first sweep) to "
        f"the last. {failures} RSS \"idle\" is blackbox before its first probe, and "
        "an exporter when it first answers /-/healthy (its probes start within a second of that). CPU at start "
        "is what the process used until then (imports, configuration), including the short-lived child process "
        "that works out its regions and endpoint URLs (CPU columns count waited-for children)." + growth,
        "",
        md_table(["process", "RSS idle MB", "RSS end MB", "RSS peak MB", "CPU s at start", "probes total",
                  "probes in window", "CPU s in window", "CPU ms / probe", "CPU ms / probe incl. start",
                  "CPU share of one core", "threads start / end"], rows),
        "",
        f"Where the CPU goes, by probe kind: {KIND_PROBES} probes of each kind one after another against the "
        "10 ms region after the run (ours: `time.process_time()` in a process doing only that; blackbox: its "
        "/proc CPU counters around the same number of /probe requests, serving them included).",
        "",
        md_table(["probe kind", "ours CPU ms / probe", "blackbox CPU ms / probe", "ratio"],
                 [[kind, f"{v['ours'] * 1e3:.2f}", f"{v['blackbox'] * 1e3:.2f}", f"{v['ours'] / v['blackbox']:.2f}"]
                  for kind, v in per_kind.items()]),
        "",
        "Where the memory goes: RSS of a fresh interpreter after each cumulative step (same venv).",
        "",
        md_table(["step", "RSS MB", "added MB"],
                 [[label, f"{mb:.1f}", f"{mb - (imports[i - 1][1] if i else 0):+.1f}"]
                  for i, (label, mb) in enumerate(imports)]),
    ])
    return BenchResult(key="footprint", title=SECTIONS["footprint"], body=body, goals=goals, seconds=seconds,
                       raw={"stats": stats, "marks": marks, "rss_samples": samples, "window": window,
                            "per_kind": per_kind, "import_rss_mb": imports})


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, module="bench.footprint", doc=__doc__,
                      option=("--duration", DURATION, "seconds of probing"),
                      run=lambda seconds: run(duration=seconds), worker=worker)


if __name__ == "__main__":
    sys.exit(main())
