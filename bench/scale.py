"""Benchmark 7, scale: one exporter probing 100 / 300 / 1,000 / 3,000 (target, region) pairs every 15 s.

`https` targets of 33-34 regions each (1,000 pairs: 30 targets) against one local plain-HTTP stand-in (a small
asyncio server in a process of its own, one URL path per pair, answering at once), as issue 15 tried it. For each
size, after the first sweep:

- CPU share of one core and RSS over a window in which the exporter is scraped as Prometheus does (once per
  15 s, gzip, Prometheus' Accept header);
- then /metrics answer times: sequential scrapes half a second apart, alternating Prometheus' headers (gzip) and
  a plain `GET` (no gzip), so that probe results land between any two of them;
- payload size (gzip and plain), series per pair (every region_latency_* sample but build info, over the pairs);
- the sweep's spread: probe arrivals at the stand-in in 1-s bins over the CPU window; a schedule without bursts
  puts pairs / 15 in each bin.

No network namespace, no root: loopback only. The exporter runs from this checkout, or with `--code DIR` from
another one (DIR/exporter first on PYTHONPATH), which is how the "before" column is measured.

    .venv/bin/python -m bench.scale [--window 90] [--sizes 100,300,1000,3000] [--code DIR] [--label after]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    OUT_DIR,
    REPO,
    BenchResult,
    Goal,
    command_line,
    cpu_seconds,
    http_get,
    md_table,
    parse_samples,
    peak_rss_bytes,
    percentile,
    region_names,
    rss_bytes,
    wait_until,
    write_raw,
)
from bench.report import SECTIONS, finish, section_header
from bench.scrape import PROMETHEUS_HEADERS

SIZES = (100, 300, 1000, 3000)
PAIRS_PER_TARGET = 100 / 3  # 33-34 regions per target
INTERVAL = 15.0
WINDOW = 90.0
SCRAPES = 40  # of each kind (gzip, plain) in the latency phase
SCRAPE_GAP = 0.5
EXPORTER_PORT = 9740
STANDIN_PORT = 9741
GOAL_CPU = 0.05
GOAL_P99 = 0.025
GOAL_SERIES = 20
GOAL_RSS = 100 * 2**20
RAW = OUT_DIR / "scale-runs.json"  # every run's numbers by label, so a "before" and an "after" can be put side by side


# -- the stand-in ----------------------------------------------------------------------------------------------------

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def standin(port: int) -> None:
    """Answer every request at once with 200; `GET /__arrivals` returns the arrival times (Unix) seen so far."""
    arrivals: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /__arrivals "):
                body = json.dumps(arrivals).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            else:
                arrivals.append(time.time())
                writer.write(_REPLY)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- one size --------------------------------------------------------------------------------------------------------

def config(pairs: int, *, port: int, standin_port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """`pairs` split over https targets of 33-34 regions, every 15 s, each pair its own URL on the stand-in.
    `host`: the stand-in's address, or a name for it (`localhost`: every probe then resolves it, as a real
    endpoint's name is; IPv4 asked for, since the stand-in listens on 127.0.0.1)."""
    n_targets = max(1, round(pairs / PAIRS_PER_TARGET))
    base, extra = divmod(pairs, n_targets)
    targets = []
    for t in range(n_targets):
        regions = region_names(base + (1 if t < extra else 0))
        targets.append({
            "name": f"svc-{t:02d}", "service": "bedrock-runtime", "probe": "https", "regions": regions,
            "endpoints": {r: f"http://{host}:{standin_port}/svc-{t:02d}/{r}" for r in regions},
            "interval": f"{INTERVAL:g}s", "timeout": "5s",
            **({} if host == "127.0.0.1" else {"options": {"ip_version": 4}}),
        })
    return {"listen": f"127.0.0.1:{port}", "cache": "none", "log_level": "warning", "targets": targets}


def _cpu_with_children(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _scrape(port: int, headers: dict[str, str]) -> tuple[float, bytes, bytes]:
    """(seconds until the whole answer was read, raw body, decompressed body)."""
    started = time.perf_counter()
    status, body = http_get(port, "/metrics", headers=headers, timeout=30)
    took = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return took, body, (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)


def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def measure(pairs: int, window: float, code: Path | None, workdir: Path, settle: float = 0.0,
            host: str = "127.0.0.1") -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code / "exporter"), os.environ.get("PYTHONPATH")]))
    stand = subprocess.Popen([sys.executable, "-m", "bench.scale", "--standin", str(STANDIN_PORT)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    config_path = workdir / f"exporter-{pairs}.yaml"
    config_path.write_text(yaml.safe_dump(config(pairs, port=EXPORTER_PORT, standin_port=STANDIN_PORT, host=host),
                                          sort_keys=False))
    log = (workdir / f"exporter-{pairs}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "region_latency", "serve", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=workdir)
    try:
        wait_until(lambda: http_get(STANDIN_PORT, "/__arrivals", timeout=2)[0] == 200, 30, "stand-in up")
        wait_until(lambda: http_get(EXPORTER_PORT, "/-/ready", timeout=2)[0] == 200, 120, "first sweep",
                   alive=lambda: proc.poll() is None)
        time.sleep(2.0 + settle)  # let the first sweep's stragglers land (and, with `settle`, the slots settle)
        # CPU window: Prometheus' cadence
        cpu0, at0, wall0 = _cpu_with_children(proc.pid), time.monotonic(), time.time()
        prom_times = []
        for i in range(max(1, int(window // INTERVAL))):
            _sleep_until(at0 + i * INTERVAL)
            took, _, _ = _scrape(EXPORTER_PORT, PROMETHEUS_HEADERS)
            prom_times.append(took)
        _sleep_until(at0 + window)
        cpu1, at1, wall1 = _cpu_with_children(proc.pid), time.monotonic(), time.time()
        rss_end = rss_bytes(proc.pid)
        # latency phase
        timings: dict[str, list[float]] = {"gzip": [], "plain": []}
        sizes: dict[str, int] = {}
        text = b""
        start = time.monotonic()
        for i in range(2 * SCRAPES):
            _sleep_until(start + i * SCRAPE_GAP)
            kind = "gzip" if i % 2 == 0 else "plain"
            took, body, text = _scrape(EXPORTER_PORT, PROMETHEUS_HEADERS if kind == "gzip" else {})
            timings[kind].append(took)
            sizes[kind] = len(body)
        peak = peak_rss_bytes(proc.pid)
        arrivals = json.loads(http_get(STANDIN_PORT, "/__arrivals", timeout=10)[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        stand.terminate()
        stand.wait(timeout=10)
    samples = [s for s in parse_samples(text.decode()) if s[0].startswith("region_latency_")
               and s[0] != "region_latency_build_info"]
    per_region = sum(1 for _, labels, _ in samples if "region" in labels)
    bins = [0] * max(1, int(wall1 - wall0))
    for t in arrivals:
        if wall0 <= t < wall0 + len(bins):
            bins[int(t - wall0)] += 1
    probed = sum(bins)
    return {
        "pairs": pairs, "window": at1 - at0, "cpu_share": (cpu1 - cpu0) / (at1 - at0),
        "rss_end": rss_end, "rss_peak": peak,
        "p50_gzip": percentile(timings["gzip"], 50), "p99_gzip": percentile(timings["gzip"], 99),
        "max_gzip": max(timings["gzip"]),
        "p50_plain": percentile(timings["plain"], 50), "p99_plain": percentile(timings["plain"], 99),
        "max_plain": max(timings["plain"]),
        "prometheus_cadence": prom_times, "bytes_gzip": sizes["gzip"], "bytes_plain": sizes["plain"],
        "series": len(samples), "series_per_region": per_region, "series_per_pair": len(samples) / pairs,
        "probes_in_window": probed, "probes_per_s": probed / len(bins),
        "peak_1s": max(bins), "ideal_1s": pairs / INTERVAL, "bins": bins,
    }


# -- where the CPU goes ---------------------------------------------------------------------------------------------

BREAKDOWN = {
    "scheduler + https probe + TargetState.record": "full",
    "scheduler + https probe (results dropped)": "norecord",
    "scheduler + TargetState.record (a probe that returns at once)": "noop",
}


def breakdown_worker(payload: dict[str, Any]) -> dict[str, float]:
    """One variant in a process of its own: the exporter's scheduler and probes over `pairs` jobs, no web side."""
    from region_latency.config import TargetConfig
    from region_latency.probes import Target, get_probe
    from region_latency.probes.base import ProbeFn, ProbeResult
    from region_latency.ranking import RankingSettings, policy_for
    from region_latency.scheduler import Job, Scheduler
    from region_latency.state import TargetInfo, TargetState
    from region_latency.tracker import RegionLatencyTracker

    mode, port = payload["mode"], payload["port"]
    probe: ProbeFn = get_probe("https")
    if mode == "noop":
        def probe(_target: Target, _timeout: float) -> ProbeResult:
            return ProbeResult(0.01, {"connect": 0.001, "ttfb": 0.01})
    options = TargetConfig.model_validate({"service": "bedrock-runtime", "regions": ["us-east-1"]}).options
    jobs = []
    for target in config(payload["pairs"], port=0, standin_port=port)["targets"]:
        state = TargetState(TargetInfo(target["name"], "bedrock-runtime", "https"), target["regions"],
                            RegionLatencyTracker(), policy_for(RankingSettings.model_validate({}), INTERVAL))
        for region in target["regions"]:
            def record(_t: Target, result: ProbeResult, state: TargetState = state, region: str = region) -> None:
                if mode != "norecord":
                    state.record(region, result)
            jobs.append(Job(f"{target['name']}/{region}", Target("bedrock-runtime", region,
                                                                 target["endpoints"][region], options),
                            probe, INTERVAL, 5.0, record))
    scheduler = Scheduler(64)
    scheduler.set_jobs(jobs)
    scheduler.start()
    time.sleep(INTERVAL + 5)  # the first sweep, then the slots settle
    cpu, at = time.process_time(), time.monotonic()
    time.sleep(payload["seconds"])
    share = (time.process_time() - cpu) / (time.monotonic() - at)
    scheduler.stop(timeout=10)
    return {"cpu_share": share}


def breakdown(pairs: int = 1000, seconds: float = 30.0) -> dict[str, float]:
    """CPU share of each variant, one process each, against the stand-in."""
    stand = subprocess.Popen([sys.executable, "-m", "bench.scale", "--standin", str(STANDIN_PORT)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_until(lambda: http_get(STANDIN_PORT, "/__arrivals", timeout=2)[0] == 200, 30, "stand-in up")
        for what, mode in BREAKDOWN.items():
            payload = json.dumps({"mode": mode, "port": STANDIN_PORT, "pairs": pairs, "seconds": seconds})
            done = subprocess.run([sys.executable, "-m", "bench.scale", "--worker", payload], cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                  check=True, timeout=INTERVAL + seconds + 60)
            out[what] = json.loads(done.stdout)["cpu_share"]
            print(f"   {what}: {out[what] * 100:.1f} %", flush=True)
    finally:
        stand.terminate()
        stand.wait(timeout=10)
    return out


# -- the report ------------------------------------------------------------------------------------------------------

def _mb(n: float) -> str:
    return f"{n / 2**20:.1f}"


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def table(runs: dict[str, dict[str, Any]]) -> str:
    """One row per (size, label): the numbers side by side."""
    rows = []
    sizes = sorted({int(p) for run in runs.values() for p in run["sizes"]})
    for pairs in sizes:
        for label, run in runs.items():
            m = run["sizes"].get(str(pairs))
            if m is None:
                continue
            per_probe = m["cpu_share"] / m["probes_per_s"] if m["probes_per_s"] else float("nan")
            rows.append([f"{pairs:,}", label + (" *" if m.get("reconstructed") else ""),
                         f"{m['cpu_share'] * 100:.1f} %", f"{m['probes_per_s']:.1f}",
                         f"{per_probe * 1e3:.2f}", _mb(m["rss_end"]), _mb(m["rss_peak"]),
                         f"{_ms(m['p50_gzip'])} / {_ms(m['p99_gzip'])}",
                         f"{_ms(m['p50_plain'])} / {_ms(m['p99_plain'])}",
                         f"{m['bytes_plain'] / 1e6:.2f} MB / {m['bytes_gzip'] / 1e3:.0f} KB",
                         f"{m['series_per_pair']:.1f}",
                         f"{m['peak_1s']} (ideal {m['ideal_1s']:.0f})"])
    return md_table(["pairs", "code", "CPU of one core", "probes / s", "CPU ms / probe", "RSS MB", "peak RSS MB",
                     "/metrics gzip p50 / p99 ms",
                     "/metrics plain p50 / p99 ms", "payload plain / gzip", "series per pair",
                     "most probes started in one second"], rows)


def _breakdown_text(runs: dict[str, dict[str, Any]]) -> list[str]:
    found = [(name, run["breakdown"]) for name, run in runs.items() if run.get("breakdown")]
    if not found:
        return []
    name, shares = found[-1]
    return ["", f"Where the CPU goes at 1,000 pairs (`{name}`'s code, `--breakdown`): the scheduler and the probes "
            "alone, without the web side, each variant in a process of its own for 30 s after its first sweep "
            "(the difference between two rows is the part one leaves out).", "",
            md_table(["variant", "CPU of one core"],
                     [[what, f"{share * 100:.1f} %"] for what, share in shares.items()])]


def result(runs: dict[str, dict[str, Any]], label: str, seconds: float) -> BenchResult:
    runs_text = "\n".join(f"- `{name}`: {run['when']}, load average at start {run['load']}; command "
                          f"`{run['command']}`" for name, run in runs.items())
    body = "\n".join([
        section_header(command_line()),
        "Issue 15's setup: `https` targets of 33-34 regions each, every 15 s, timeout 5 s, against one local "
        "plain-HTTP stand-in (an asyncio server in a process of its own, answering at once; one URL path per "
        "pair). For each size, after the first sweep: CPU share of one core (the exporter and its children) over a "
        "window in which it is scraped as Prometheus does (every 15 s, gzip), RSS at the end of it and its peak; "
        f"then {SCRAPES} scrapes with Prometheus' headers (gzip) and {SCRAPES} plain ones, alternating, "
        f"{SCRAPE_GAP:g} s apart (probe results land between any two), each timed until its last byte was read; "
        "series per pair is every region_latency_* sample but build info, over the pairs; the sweep's spread is "
        "the most probe requests the stand-in saw start in one second of the window (a schedule without bursts "
        "puts pairs / 15 in each). Probes / s is what the stand-in saw in the CPU window: after the first sweep "
        "the new schedule gives each pair its own slot, its second run 0.5 to 1.5 intervals after the first, so a "
        "window that starts right after the first sweep sees a little less than pairs / 15; CPU ms / probe "
        "compares the two schedules at their own rates. The machine is shared (2 cores): the load average says "
        "how busy it was. A run with `--host localhost` names the stand-in in the targets' URLs, so that every "
        "probe resolves the name (through /etc/hosts here, the cheapest resolver there is), as probes of real "
        "endpoints do; the others use its address, as issue 15 tried it. Runs marked * were carried over from "
        "this report as it stood before (their raw numbers are gone; the table shows them as rounded there).",
        "",
        "Runs:",
        runs_text,
        "",
        table(runs),
        *_breakdown_text(runs),
    ])
    now = runs[label]["sizes"].get("1000")
    goals = []
    if now is not None:
        goals = [
            Goal("scale, CPU at 1,000 pairs", "≤ 5 % of one core", f"{now['cpu_share'] * 100:.1f} %",
                 now["cpu_share"] <= GOAL_CPU),
            Goal("scale, /metrics p99 at 1,000 pairs (gzip, plain)", "≤ 25 ms",
                 f"{_ms(now['p99_gzip'])} ms, {_ms(now['p99_plain'])} ms",
                 max(now["p99_gzip"], now["p99_plain"]) <= GOAL_P99),
            Goal("scale, series per pair (defaults)", "≤ 20", f"{now['series_per_pair']:.1f}",
                 now["series_per_pair"] <= GOAL_SERIES),
            Goal("scale, RSS at 1,000 pairs", "≤ 100 MB", f"{_mb(max(now['rss_end'], now['rss_peak']))} MB peak",
                 max(now["rss_end"], now["rss_peak"]) <= GOAL_RSS),
        ]
    return BenchResult(key="scale", title=SECTIONS["scale"], body=body, goals=goals, seconds=seconds,
                       raw={"runs": runs})


def run(sizes: Sequence[int] = SIZES, window: float = WINDOW, code: Path | None = None,
        label: str = "after", settle: float = 0.0, host: str = "127.0.0.1") -> BenchResult:
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = json.loads(RAW.read_text()) if RAW.exists() else {}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    measured_sizes: dict[str, dict[str, Any]] = {}
    entry = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": load, "command": command_line(),
             "sizes": measured_sizes}
    for pairs in sizes:
        print(f"-- {label}: {pairs} pairs", flush=True)
        measured = measure(pairs, window, code, OUT_DIR / "scale", settle, host)
        measured_sizes[str(pairs)] = measured
        print(f"   CPU {measured['cpu_share'] * 100:.1f} %, RSS {_mb(measured['rss_end'])} MB, gzip p50/p99 "
              f"{_ms(measured['p50_gzip'])}/{_ms(measured['p99_gzip'])} ms, plain "
              f"{_ms(measured['p50_plain'])}/{_ms(measured['p99_plain'])} ms, {measured['series_per_pair']:.1f} "
              f"series/pair, peak 1 s {measured['peak_1s']}", flush=True)
    runs[label] = entry
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps(runs, indent=1) + "\n")
    write_raw("scale", {"runs": runs})
    return result(runs, label, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="pairs, comma-separated")
    parser.add_argument("--window", type=float, default=WINDOW, help=f"seconds of CPU window (default {WINDOW:g})")
    parser.add_argument("--code", type=Path, help="run the exporter from this checkout (e.g. main's, for 'before')")
    parser.add_argument("--label", default="after", help="name of this run in the table (default after)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the first sweep before the CPU window (default 0)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the stand-in's address in the targets' URLs, or a name (localhost: every probe "
                             "resolves it, as with real endpoints; default 127.0.0.1)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--breakdown", action="store_true",
                        help="only measure where the CPU goes at 1,000 pairs (added to the run named by --label)")
    parser.add_argument("--standin", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.standin:
        standin(args.standin)
        return 0
    if args.worker:
        print(json.dumps(breakdown_worker(json.loads(args.worker))))
        return 0
    if args.breakdown:
        started = time.monotonic()
        runs: dict[str, dict[str, Any]] = json.loads(RAW.read_text()) if RAW.exists() else {}
        runs.setdefault(args.label, {"when": "-", "load": "-", "command": command_line(), "sizes": {}})
        runs[args.label]["breakdown"] = breakdown()
        RAW.write_text(json.dumps(runs, indent=1) + "\n")
        return finish(result(runs, args.label, time.monotonic() - started), write=not args.no_report)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return finish(run(sizes, args.window, args.code, args.label, args.settle, args.host),
                  write=not args.no_report)


if __name__ == "__main__":
    sys.exit(main())
