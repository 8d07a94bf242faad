"""Benchmark 3, scrape cost: /metrics latency of the real exporter process under 1, 10 and 50 concurrent scrapers,
side by side with a bare prometheus_client registry holding the same series.

The exporter probes 35 simulated regions x 2 probe kinds (tcp, https) every 2 s until every region of both
targets is ranked, then is reloaded to a 600 s interval so no probe runs while it is scraped: what is measured is
the cost of /metrics alone. Last, the top level once more against the exporter alone while it probes every 3 s.
Its exposition is copied into `bench/bare_registry.py` (prometheus_client Gauge/Counter/
Histogram objects, the same process/GC collectors, `start_http_server`). A load generator process (asyncio, one
connection per request, Prometheus 2.42's request headers: OpenMetrics preferred, gzip) keeps N scrapes in flight
against one server at a time; the two servers alternate in rounds so both see the same background load.

    .venv/bin/python -m bench.scrape
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from bench.common import (
    OUT_DIR,
    REPO,
    BenchResult,
    ExporterProcess,
    Goal,
    bench_main,
    collect_worker,
    command_line,
    exporter_config,
    http_get,
    md_table,
    median,
    ms,
    parse_samples,
    percentile,
    simulated_regions,
    start_simulator,
    start_worker,
    sum_samples,
    wait_until,
)
from bench.report import SECTIONS, section_header
from region_latency.netsim import RegionSimulator

REGIONS = 35
LEVELS = (1, 10, 50)
ROUNDS = 4
EXPORTER_PORT = 9720
BARE_PORT = 9721
P99_GOAL = 0.010
RATIO_GOAL = 1.5
SCRAPE_TIMEOUT = 10.0  # what the request header announces: Prometheus gives up (up=0) after it
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


ROUND_SECONDS = 2.0  # each round keeps its scrapers going this long (then waits for those in flight)


# -- the load generator (a worker process in the client namespace) ----------------------------------------------------

def _request(port: int) -> bytes:
    lines = ["GET /metrics HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in PROMETHEUS_HEADERS.items()),
             "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _scrape(port: int, request: bytes) -> float | None:
    """Seconds from connect to the end of one /metrics response; None when it failed (refused, reset, timed
    out after 10 s like a Prometheus scrape, not 200)."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            data = await reader.read()  # to EOF: both servers close after one response
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - started
    if not data.startswith(b"HTTP/1.") or data.split(b" ", 2)[1] != b"200":
        return None
    return elapsed


async def _level(port: int, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """`concurrency` scrapers in a closed loop for `seconds` (a scrape started before the end is waited for);
    (latencies of the good ones, number failed)."""
    request = _request(port)
    latencies: list[float] = []
    failed = 0
    end = time.perf_counter() + seconds

    async def scraper() -> None:
        nonlocal failed
        while time.perf_counter() < end:
            elapsed = await _scrape(port, request)
            if elapsed is None:
                failed += 1
            else:
                latencies.append(elapsed)

    await asyncio.gather(*(scraper() for _ in range(concurrency)))
    return latencies, failed


def worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Every level against both servers, alternating in rounds; latencies and failures per server and level."""
    servers: dict[str, int] = payload["servers"]
    out: dict[str, Any] = {name: {"latencies": {}, "failed": {}, "seconds": {}} for name in servers}
    for port in servers.values():
        asyncio.run(_level(port, 1, 0.2))  # warm-up
    for concurrency in payload["levels"]:
        key = str(concurrency)
        for r in range(payload["rounds"]):
            names = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in names:
                started = time.perf_counter()
                latencies, failed = asyncio.run(_level(servers[name], concurrency, payload["seconds"]))
                entry = out[name]
                entry["latencies"].setdefault(key, []).extend(latencies)
                entry["failed"][key] = entry["failed"].get(key, 0) + failed
                entry["seconds"][key] = entry["seconds"].get(key, 0.0) + time.perf_counter() - started
    return out


# -- the benchmark ----------------------------------------------------------------------------------------------------

def fill(sim: RegionSimulator, exporter: ExporterProcess, fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    """Probe fast until every region of both targets is ranked, then switch to a slow interval; on a namespace
    thread."""
    expected = len(sim.regions) * len(fast["targets"])
    exporter.wait_healthy()
    ranked = wait_until(lambda: sum(1 for n, _, _ in exporter.metrics() if n == "region_latency_rank") >= expected,
                        90, "every region ranked", interval=0.5, alive=exporter.alive)
    before = sum_samples(exporter.metrics(), "region_latency_probes_total")
    exporter.config_path.write_text(yaml.safe_dump(slow, sort_keys=False))
    status, body = http_get(exporter.port, "/-/reload", method="POST")
    if status != 200:
        raise RuntimeError(f"reload failed: {status} {body!r}")
    # a changed interval reschedules each job within a second: wait for that last sweep, then all is quiet
    wait_until(lambda: sum_samples(exporter.metrics(), "region_latency_probes_total") >= before + expected,
               30, "the sweep after the reload", interval=0.2)
    time.sleep(1.0)
    settled = sum_samples(exporter.metrics(), "region_latency_probes_total")
    return {"seconds_to_rank_all": ranked, "probes_at_measure": settled}


def exposition(port: int) -> dict[str, Any]:
    """Size of what each server answers Prometheus (gzip) and its number of samples."""
    status, body = http_get(port, "/metrics", headers=PROMETHEUS_HEADERS)
    plain_status, plain = http_get(port, "/metrics")
    if status != 200 or plain_status != 200:
        raise RuntimeError(f"/metrics on {port} answered {status}/{plain_status}")
    text = plain.decode()
    try:
        uncompressed = len(gzip.decompress(body))
    except OSError:
        uncompressed = len(body)
    return {"gzip_bytes": len(body), "openmetrics_bytes": uncompressed, "text_bytes": len(plain),
            "samples": len(parse_samples(text)),
            "region_latency_samples": sum(1 for n, _, _ in parse_samples(text) if n.startswith("region_latency_")),
            "text": text}


def run(levels: Sequence[int] = LEVELS, rounds: int = ROUNDS) -> BenchResult:
    started = time.monotonic()
    workdir = OUT_DIR / "scrape"
    sim = start_simulator(simulated_regions(REGIONS))
    exporter = bare = None
    try:
        fast = exporter_config(sim, port=EXPORTER_PORT, interval="3s", timeout="2s", concurrency=70)
        slow = exporter_config(sim, port=EXPORTER_PORT, interval="600s", timeout="5s")
        exporter = ExporterProcess(sim, fast, workdir)
        filled = sim.call_in_client(fill, sim, exporter, fast, slow)
        ours = sim.call_in_client(exposition, EXPORTER_PORT)
        dump = workdir / "exporter-metrics.txt"
        dump.write_text(ours.pop("text"))
        bare_log = (workdir / "bare.log").open("w")
        bare = sim.run_in_client([sys.executable, "-m", "bench.bare_registry", str(dump), str(BARE_PORT)],
                                 stdout=bare_log, stderr=bare_log, cwd=str(REPO))
        sim.call_in_client(wait_until, lambda: http_get(BARE_PORT, "/metrics")[0] == 200, 30, "bare registry up")
        base = sim.call_in_client(exposition, BARE_PORT)
        (workdir / "bare-metrics.txt").write_text(base.pop("text"))
        log = workdir / "loadgen.log"
        payload = {"servers": {"exporter": EXPORTER_PORT, "bare": BARE_PORT}, "levels": list(levels),
                   "rounds": rounds, "seconds": ROUND_SECONDS}
        loads = collect_worker(start_worker(sim, "bench.scrape", payload, log), log, timeout=400)
        rss = {"exporter": _rss_mb(exporter.pid), "bare": _rss_mb(bare.pid)}
        busy = sim.call_in_client(while_probing, sim, exporter, fast, workdir, max(levels))
    finally:
        if exporter is not None:
            exporter.stop()
        if bare is not None and bare.poll() is None:
            bare.terminate()
            bare.wait(10)
        sim.close()
    return report(loads, {"exporter": ours, "bare": base}, filled, rss, levels, rounds,
                  time.monotonic() - started, busy)


def while_probing(sim: RegionSimulator, exporter: ExporterProcess, fast: dict[str, Any], workdir: Any,
                  level: int) -> dict[str, Any]:
    """The top level again, against the exporter alone, while it probes every region every 3 s: every probe
    result is a new snapshot generation, so scrapes keep meeting fresh renders (what production looks like, at a
    far higher result rate). On a namespace thread."""
    exporter.config_path.write_text(yaml.safe_dump(fast, sort_keys=False))
    status, body = http_get(exporter.port, "/-/reload", method="POST")
    if status != 200:
        raise RuntimeError(f"reload failed: {status} {body!r}")
    time.sleep(4.0)  # the reload reschedules every job within a second; let a full sweep land
    before = sum_samples(exporter.metrics(), "region_latency_probes_total")
    log = workdir / "loadgen-busy.log"
    payload = {"servers": {"exporter": EXPORTER_PORT}, "levels": [level], "rounds": 1, "seconds": 10.0}
    started = time.monotonic()
    loads = collect_worker(start_worker(sim, "bench.scrape", payload, log), log, timeout=200)
    seconds = time.monotonic() - started
    probes = sum_samples(exporter.metrics(), "region_latency_probes_total") - before
    return {"loads": loads, "probes": probes, "seconds": seconds}


def _rss_mb(pid: int) -> float:
    from bench.common import rss_bytes

    return rss_bytes(pid) / 2**20


def report(results: dict[str, Any], sizes: dict[str, dict[str, Any]], filled: dict[str, Any],
           rss: dict[str, float], levels: Sequence[int], rounds: int, seconds: float,
           busy: dict[str, Any]) -> BenchResult:
    rows, goals = [], []
    stats: dict[str, Any] = {}
    for level in levels:
        key = str(level)
        ours, base = results["exporter"]["latencies"][key], results["bare"]["latencies"][key]
        o50, o99, b50, b99 = median(ours), percentile(ours, 99), median(base), percentile(base, 99)
        failed = {name: results[name]["failed"][key] for name in ("exporter", "bare")}
        rate = {name: (len(results[name]["latencies"][key]) + failed[name]) / results[name]["seconds"][key]
                for name in ("exporter", "bare")}
        stats[key] = {"exporter_p50": o50, "exporter_p99": o99, "bare_p50": b50, "bare_p99": b99,
                      "n": len(ours), "failed": failed, "per_second": rate}
        rows.append([level, len(ours) + failed["exporter"], ms(o50, 1), ms(o99, 1), f"{rate['exporter']:.0f}",
                     failed["exporter"], len(base) + failed["bare"], ms(b50, 1), ms(b99, 1), f"{rate['bare']:.0f}",
                     failed["bare"],
                     f"{o50 / b50:.2f}", f"{o99 / b99:.2f}"])
        goals.append(Goal(what=f"scrape, {level} concurrent: exporter/bare", goal=f"ratio ≤ {RATIO_GOAL} (p50, p99)",
                          measured=f"p50 {o50 / b50:.2f}, p99 {o99 / b99:.2f}",
                          passed=o50 / b50 <= RATIO_GOAL and o99 / b99 <= RATIO_GOAL))
    top = str(max(levels))
    p99 = stats[top]["exporter_p99"]
    goals.insert(0, Goal(what=f"scrape, /metrics p99 at {top} concurrent", goal=f"≤ {P99_GOAL * 1e3:g} ms",
                         measured=f"{ms(p99, 1)} ms (bare registry {ms(stats[top]['bare_p99'], 1)} ms)",
                         passed=p99 <= P99_GOAL))
    busy_key = str(max(levels))
    busy_entry = busy["loads"]["exporter"]
    busy_lat = busy_entry["latencies"][busy_key]
    busy_failed = busy_entry["failed"][busy_key]
    busy_level, busy_p50, busy_p99 = busy_key, median(busy_lat), percentile(busy_lat, 99)
    busy_rate = (len(busy_lat) + busy_failed) / busy_entry["seconds"][busy_key]
    stats["while_probing"] = {"p50": busy_p50, "p99": busy_p99, "per_second": busy_rate, "failed": busy_failed,
                              "probes": busy["probes"], "seconds": busy["seconds"]}
    size_rows = [[name, s["samples"], s["region_latency_samples"], s["text_bytes"], s["openmetrics_bytes"],
                  s["gzip_bytes"], f"{rss[name]:.1f}"] for name, s in sizes.items()]
    body = "\n".join([
        section_header(command_line()),
        f"The real exporter process holding {REGIONS} regions x 2 probe kinds (every region ranked, "
        f"{filled['probes_at_measure']:.0f} probes done, no probe running during the measurement), and a bare "
        "prometheus_client registry with the same series (`bench/bare_registry.py`), same machine, same run. "
        f"Closed loop: N scrapers each send the next request when the previous one is answered, for "
        f"{ROUND_SECONDS:g} s per round (then the scrapes in flight are waited for); {rounds} rounds per level, the "
        "two servers alternating; one TCP connection per scrape (both servers close it), "
        "Prometheus 2.42's headers (OpenMetrics, gzip). Latency = connect to last byte, in ms, of the scrapes "
        "that succeeded; failed = refused, reset, or not answered within Prometheus's 10 s scrape timeout.",
        "",
        md_table(["scrapers", "exporter requests", "exporter p50", "exporter p99", "exporter req/s",
                  "exporter failed", "bare requests", "bare p50", "bare p99", "bare req/s", "bare failed",
                  "ratio p50", "ratio p99"], rows),
        "",
        "The exporter answers from bytes rendered once per snapshot generation (the per-target families, "
        "export/text.py) and re-renders its few runtime families (process, GC) when over 1 s old (`MetricsCache` "
        "in export/web.py); a scrape whose answer is ready is answered on the server's event loop "
        "(export/server.py, asyncio + httptools), one that needs a render goes to a worker thread. The bare "
        "server is prometheus_client's `start_http_server` as shipped: a wsgiref thread per connection, a full "
        "render per scrape, listen backlog 5, so bursts lose SYNs (retried after 1, 3, 7 s: its p99 and failures).",
        "",
        f"While probing: the exporter alone, {busy_level} scrapers again, while it probes all {REGIONS} regions x 2 "
        f"kinds every 3 s ({busy['probes']:.0f} probe results in {busy['seconds']:.0f} s, each one a new generation "
        "to render for the next scrape; Prometheus at a 15 s interval sees one per scrape at most): "
        f"p50 {ms(busy_p50, 1)} ms, p99 {ms(busy_p99, 1)} ms, {busy_rate:.0f} req/s, {busy_failed} failed.",
        "",
        md_table(["server", "samples", "region_latency_* samples", "text bytes", "OpenMetrics bytes",
                  "gzip bytes", "RSS MB"], size_rows),
    ])
    return BenchResult(key="scrape", title=SECTIONS["scrape"], body=body, goals=goals, seconds=seconds,
                       raw={"stats": stats, "sizes": sizes, "filled": filled, "rss_mb": rss, "results": results,
                            "while_probing": busy})


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, module="bench.scrape", doc=__doc__,
                      option=("--rounds", ROUNDS, "rounds per level"),
                      run=lambda rounds: run(rounds=rounds), worker=worker)


if __name__ == "__main__":
    sys.exit(main())
