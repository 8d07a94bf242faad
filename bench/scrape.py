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
from region_latency_devkit.netsim import RegionSimulator
from region_latency_devkit.process import stop_process

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


ROUND_SECONDS = 1.5  # each round keeps its scrapers going this long (then waits for those in flight)
# name -> (port, reuse connections). Prometheus keeps its connection from scrape to scrape when the server allows
# it (the exporter does; prometheus_client's wsgiref server answers HTTP/1.0 and closes); the exporter is also
# measured with a new connection per scrape, the cost a scraper that never reuses pays.
CONTENDERS = {"exporter": (EXPORTER_PORT, True), "exporter, new connection per scrape": (EXPORTER_PORT, False),
              "bare": (BARE_PORT, True)}


# -- the load generator (a worker process in the client namespace) ----------------------------------------------------

def _request(port: int, reuse: bool) -> bytes:
    lines = ["GET /metrics HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in PROMETHEUS_HEADERS.items())]
    if not reuse:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Scraper:
    """One scraper's connection. Like Prometheus, it keeps the connection for the next scrape when the server
    does (`reuse`); otherwise it asks for `Connection: close` and connects for every scrape."""

    def __init__(self, port: int, reuse: bool) -> None:
        self.port, self.reuse = port, reuse
        self.request = _request(port, reuse)
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None

    async def scrape(self) -> float | None:
        """Seconds from the start of the scrape (the connect, when one is needed) to the last byte of the
        response; None when it failed (refused, reset, timed out after 10 s like a Prometheus scrape, not 200)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT):
                if self.conn is None:
                    self.conn = await asyncio.open_connection("127.0.0.1", self.port)
                reader, writer = self.conn
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                closes = (headers.get("connection", "").lower() == "close" or lines[0].startswith("HTTP/1.0")
                          or "content-length" not in headers)
                if "content-length" in headers:
                    await reader.readexactly(int(headers["content-length"]))
                else:
                    await reader.read()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return None
        elapsed = time.perf_counter() - started
        if closes:
            self.close()
        return elapsed if lines[0].split(" ", 2)[1] == "200" else None


async def _level(port: int, reuse: bool, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """`concurrency` scrapers in a closed loop for `seconds` (a scrape started before the end is waited for);
    (latencies of the good ones, number failed)."""
    latencies: list[float] = []
    failed = 0
    end = time.perf_counter() + seconds

    async def scraper() -> None:
        nonlocal failed
        client = _Scraper(port, reuse)
        try:
            while time.perf_counter() < end:
                elapsed = await client.scrape()
                if elapsed is None:
                    failed += 1
                else:
                    latencies.append(elapsed)
        finally:
            client.close()

    await asyncio.gather(*(scraper() for _ in range(concurrency)))
    return latencies, failed


def worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Every level against every contender ({name: [port, reuse]}), taking turns in rounds (the order rotates);
    latencies and failures per contender and level."""
    contenders: dict[str, list[Any]] = payload["contenders"]
    out: dict[str, Any] = {name: {"latencies": {}, "failed": {}, "seconds": {}} for name in contenders}
    for port, reuse in contenders.values():
        asyncio.run(_level(port, reuse, 1, 0.2))  # warm-up
    for concurrency in payload["levels"]:
        key = str(concurrency)
        for r in range(payload["rounds"]):
            names = list(contenders)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                port, reuse = contenders[name]
                started = time.perf_counter()
                latencies, failed = asyncio.run(_level(port, reuse, concurrency, payload["seconds"]))
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
        payload = {"contenders": {name: [port, reuse] for name, (port, reuse) in CONTENDERS.items()},
                   "levels": list(levels), "rounds": rounds, "seconds": ROUND_SECONDS}
        loads = collect_worker(start_worker(sim, "bench.scrape", payload, log), log, timeout=400)
        rss = {"exporter": _rss_mb(exporter.pid), "bare": _rss_mb(bare.pid)}
        busy = sim.call_in_client(while_probing, sim, exporter, fast, workdir, max(levels))
    finally:
        if exporter is not None:
            exporter.stop()
        if bare is not None:
            stop_process(bare, 10)
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
    payload = {"contenders": {"exporter": [EXPORTER_PORT, True]}, "levels": [level], "rounds": 1, "seconds": 10.0}
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
    fresh = "exporter, new connection per scrape"
    for level in levels:
        key = str(level)
        level_stats: dict[str, Any] = {}
        for name in results:
            lat, failed = results[name]["latencies"][key], results[name]["failed"][key]
            level_stats[name] = {"n": len(lat) + failed, "failed": failed, "p50": median(lat),
                                 "p99": percentile(lat, 99),
                                 "per_second": (len(lat) + failed) / results[name]["seconds"][key]}
        stats[key] = level_stats
        ours, new, base = level_stats["exporter"], level_stats[fresh], level_stats["bare"]
        r50, r99 = ours["p50"] / base["p50"], ours["p99"] / base["p99"]
        rows.append([level, *_cells(ours), *_cells(new), *_cells(base), f"{r50:.2f}", f"{r99:.2f}"])
        goals.append(Goal(what=f"scrape, {level} concurrent: exporter/bare", goal=f"ratio ≤ {RATIO_GOAL} (p50, p99)",
                          measured=f"p50 {r50:.2f}, p99 {r99:.2f}", passed=r50 <= RATIO_GOAL and r99 <= RATIO_GOAL))
    top = stats[str(max(levels))]
    p99 = top["exporter"]["p99"]
    goals.insert(0, Goal(what=f"scrape, /metrics p99 at {max(levels)} concurrent", goal=f"≤ {P99_GOAL * 1e3:g} ms",
                         measured=f"{ms(p99, 1)} ms with Prometheus' connection reuse, {ms(top[fresh]['p99'], 1)} ms "
                                  f"with a new connection per scrape (bare registry {ms(top['bare']['p99'], 1)} ms)",
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
        "contenders taking turns. Prometheus 2.42's request headers (OpenMetrics preferred, gzip), and its "
        "connection behaviour: a scraper keeps its connection for the next scrape when the server allows it (the "
        "exporter does; the bare server answers HTTP/1.0 and closes, so every scrape of it connects anew). The "
        "exporter is measured a second time with `Connection: close` on every scrape (a new connection each "
        "time). Latency = start of the scrape (the connect, when there is one) to the last byte, in ms, of the "
        "scrapes that succeeded; failed = refused, reset, or not answered within Prometheus's 10 s scrape timeout. "
        "Ratios compare the exporter and the bare registry as Prometheus would scrape them.",
        "",
        md_table(["scrapers", "exporter requests", "exporter p50", "exporter p99", "exporter req/s",
                  "exporter failed", "new conn. requests", "new conn. p50", "new conn. p99", "new conn. req/s",
                  "new conn. failed", "bare requests", "bare p50", "bare p99", "bare req/s", "bare failed",
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


def _cells(entry: dict[str, Any]) -> list[object]:
    return [entry["n"], ms(entry["p50"], 1), ms(entry["p99"], 1), f"{entry['per_second']:.0f}", entry["failed"]]


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, module="bench.scrape", doc=__doc__,
                      option=("--rounds", ROUNDS, "rounds per level"),
                      run=lambda rounds: run(rounds=rounds), worker=worker)


if __name__ == "__main__":
    sys.exit(main())
