"""Benchmark 6, HTTP server: the exporter's own server (export/server.py) against uvicorn, the same cached bytes.

Why the exporter keeps a server of its own has to be measured, not assumed: uvicorn uses the same C parser
(httptools) on the same asyncio loop. Each server runs in a process of its own and answers every `GET /metrics`
with one fixed, pre-compressed exposition (the size of the exporter's own for 35 regions x 2 targets), so only
the servers differ. Ours answers from its handler on the loop as the exporter does for a cached scrape; uvicorn
runs a minimal ASGI app (`--http httptools --loop asyncio`, no access log). A closed loop of N scrapers
(Prometheus 2.42's request headers, connections kept, as bench/scrape.py) alternates between the two in rounds;
reported: latency p50/p99, requests per second, and server CPU per request (from /proc).

    .venv/bin/python -m bench.server_compare
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BenchResult,
    Goal,
    bench_main,
    command_line,
    cpu_seconds,
    md_table,
    median,
    ms,
    percentile,
    rss_bytes,
    wait_until,
)
from bench.report import SECTIONS
from bench.scrape import _level

LEVELS = (1, 10, 50)
ROUNDS = 4
SECONDS = 1.5
PORTS = {"ours": 9731, "uvicorn": 9732}


def exposition() -> bytes:
    """A text exposition shaped like the exporter's (35 regions x 2 targets, ~40 series per region)."""
    lines = []
    for family in range(40):
        name = f"region_latency_family_{family}_seconds"
        lines += [f"# HELP {name} A family like the exporter's.", f"# TYPE {name} gauge"]
        for target in ("bedrock-runtime-https", "bedrock-runtime-tcp"):
            for region in range(35):
                lines.append(f'{name}{{target="{target}",service="bedrock-runtime",probe="https",'
                             f'region="region-{region:02d}"}} {0.0123 * (region + 1) + family:.6f}')
    return ("\n".join(lines) + "\n").encode()


# --- the two servers (each in a process of its own) --------------------------------------------------------------


def serve_ours(port: int, body: bytes) -> None:
    from region_latency.export.server import HttpServer, Request, Response

    answer = Response(200, (("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                            ("Content-Encoding", "gzip")), body)

    class Cached:
        def respond_now(self, request: Request) -> Response | None:
            return answer

        def respond(self, request: Request) -> Response:
            return answer

    server = HttpServer(Cached(), "127.0.0.1", port)
    server.start()
    while True:
        time.sleep(3600)


def serve_uvicorn(port: int, body: bytes) -> None:
    import uvicorn

    headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"), (b"content-encoding", b"gzip"),
               (b"content-length", str(len(body)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="asyncio", access_log=False,
                log_level="warning", lifespan="off")


def _serve(which: str, port: int) -> None:
    body = gzip.compress(exposition(), compresslevel=1)
    (serve_ours if which == "ours" else serve_uvicorn)(port, body)


# --- the run ------------------------------------------------------------------------------------------------------


def run(rounds: int = ROUNDS) -> BenchResult:
    procs = {which: subprocess.Popen([sys.executable, "-m", "bench.server_compare", "--serve", which],
                                     cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONHASHSEED": "0"})
             for which in PORTS}
    try:
        for which, port in PORTS.items():
            wait_until(lambda p=port: _answers(p), 20, f"{which} server on :{port}")
        results: dict[str, dict[int, dict[str, Any]]] = {w: {n: {"lat": [], "failed": 0, "cpu": 0.0, "secs": 0.0}
                                                             for n in LEVELS} for w in PORTS}
        for _ in range(int(rounds)):
            for level in LEVELS:
                for which, port in PORTS.items():
                    pid = procs[which].pid
                    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                    latencies, failed = asyncio.run(_level(port, True, level, SECONDS))
                    entry = results[which][level]
                    entry["cpu"] += cpu_seconds(pid) - cpu0
                    entry["secs"] += time.perf_counter() - t0
                    entry["lat"] += latencies
                    entry["failed"] += failed
        rss = {which: rss_bytes(proc.pid) / 1e6 for which, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    return _report(results, rss, rounds)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _report(results: dict[str, dict[int, dict[str, Any]]], rss: dict[str, float], rounds: int) -> BenchResult:
    rows = []
    summary: dict[int, dict[str, float]] = {}
    for level in LEVELS:
        row: list[object] = [level]
        figures: dict[str, float] = {}
        for which in PORTS:
            entry = results[which][level]
            lat = entry["lat"]
            count = len(lat)
            figures[f"{which}_p50"] = median(lat)
            figures[f"{which}_p99"] = percentile(lat, 99)
            figures[f"{which}_rps"] = count / entry["secs"] if entry["secs"] else 0.0
            figures[f"{which}_cpu_us"] = entry["cpu"] / count * 1e6 if count else 0.0
            row += [count, ms(figures[f"{which}_p50"]), ms(figures[f"{which}_p99"]), f"{figures[f'{which}_rps']:.0f}",
                    f"{figures[f'{which}_cpu_us']:.0f}", entry["failed"]]
        summary[level] = figures
        rows.append(row)
    header = ["scrapers"] + [f"{w} {c}" for w in PORTS for c in ("requests", "p50 ms", "p99 ms", "req/s",
                                                                  "CPU µs/req", "failed")]
    top = summary[LEVELS[-1]]
    cpu_ratio = top["ours_cpu_us"] / top["uvicorn_cpu_us"] if top["uvicorn_cpu_us"] else float("inf")
    p99_ratio = top["ours_p99"] / top["uvicorn_p99"] if top["uvicorn_p99"] else float("inf")
    text = "\n".join([
        f"Command: `{command_line()}`",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "",
        f"{rounds} rounds of {SECONDS:g} s per level and server, alternating.",
        "",
        md_table(header, rows),
        "",
        f"At {LEVELS[-1]} scrapers: CPU per request ours/uvicorn {cpu_ratio:.2f}, p99 ours/uvicorn {p99_ratio:.2f}. "
        f"RSS at the end: ours {rss['ours']:.1f} MB, uvicorn {rss['uvicorn']:.1f} MB.",
    ])
    goals = [
        Goal(what=f"server, CPU per request at {LEVELS[-1]} scrapers: ours/uvicorn", goal="ratio ≤ 1.0",
             measured=f"{cpu_ratio:.2f} ({top['ours_cpu_us']:.0f} vs {top['uvicorn_cpu_us']:.0f} µs)",
             passed=cpu_ratio <= 1.0),
        Goal(what=f"server, /metrics p99 at {LEVELS[-1]} scrapers: ours/uvicorn", goal="ratio ≤ 1.0",
             measured=f"{p99_ratio:.2f} ({ms(top['ours_p99'])} vs {ms(top['uvicorn_p99'])} ms)",
             passed=p99_ratio <= 1.0),
    ]
    return BenchResult(key="server", title=SECTIONS["server"], body=text, goals=goals,
                       raw={"summary": summary, "rss_mb": rss})


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve"]:
        _serve(args[1], PORTS[args[1]])
        return 0
    return bench_main(args, module="bench.server_compare", doc=__doc__, option=("--rounds", ROUNDS, "rounds per level"),
                      run=run)


if __name__ == "__main__":
    sys.exit(main())
