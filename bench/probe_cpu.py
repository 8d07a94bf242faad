"""Benchmark 8, probe CPU: the https probe's request on h11 alone (what the probe runs) against the same request
through httpcore's connection layer (what it ran before), on the same sockets, stamps and deadline.

Why the probe speaks h11 itself instead of going through httpcore (the engine under httpx): it owns its sockets,
its TLS handshake loop, its deadline and its stamps already, so httpcore's connection, request and trace layers
only add Python work per probe. At 1,000 pairs every 15 s that work is a large part of the exporter's CPU
(issue 15). This benchmark keeps the comparison honest: both variants run in one process, alternating, against
one local plain-HTTP stand-in (bench/scale.py's, in a process of its own), and each reports the CPU time (user +
system) per probe of this process:

- back to back (caches warm: the least a probe can cost);
- one probe every 15 ms (the exporter's cadence at 1,000 pairs: 67 probes a second, caches cold between them).

Medians of `--rounds` rounds of `--probes` probes per variant and cadence.

    .venv/bin/python -m bench.probe_cpu [--rounds 5] [--probes 400] [--no-report]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpcore

from bench.common import REPO, BenchResult, Goal, command_line, http_get, md_table, median, wait_until
from bench.report import SECTIONS, finish, section_header
from region_latency.probes.base import Deadline, ProbeResult, Target
from region_latency.probes.https import DeadlineBackend, DeadlineStream, HttpsOptions, probe

STANDIN_PORT = 9742
CADENCES = (0.0, 0.015)  # seconds between probes
ROUNDS = 5
PROBES = 400


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the httpcore variant: the probe's own sockets and stamps under httpcore's connection layer ------------------------

class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: DeadlineStream) -> None:
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, timeout)

    def close(self) -> None:
        self.stream.close()

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, deadline: Deadline) -> None:
        self.inner = DeadlineBackend(deadline)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self.inner.connect_tcp(host, port, timeout, local_address, socket_options))


def httpcore_probe(target: Target, timeout: float) -> ProbeResult:
    """The request as the probe sent it through httpcore (trace events and all), timed by the same stamps."""
    deadline = Deadline(timeout)
    backend = _Backend(deadline)
    host, port = "127.0.0.1", int(target.url.rsplit(":", 1)[1].split("/")[0])
    path = "/" + target.url.split("/", 3)[3]
    stamps: dict[str, float] = {}

    def trace(event: str, _info: Any) -> None:
        stamps[event] = time.perf_counter()

    connection = httpcore.HTTPConnection(origin=httpcore.Origin(b"http", host.encode(), port),
                                         network_backend=backend, retries=0)
    extensions = {"trace": trace, "timeout": {"connect": timeout, "read": timeout, "write": timeout,
                                              "pool": timeout}}
    headers = {"Host": f"{host}:{port}", "User-Agent": "bench", "Accept": "*/*"}
    with connection, connection.stream("GET", httpcore.URL(scheme="http", host=host, port=port, target=path),
                                       headers=headers, extensions=extensions) as response:
        for _ in response.iter_stream():
            pass
    phases = backend.inner.stamps.phases()
    return ProbeResult(phases["ttfb"], phases, status=response.status)


# -- the measurement -------------------------------------------------------------------------------------------------

VARIANTS: dict[str, Callable[[Target, float], ProbeResult]] = {
    "h11 (the probe)": probe,
    "httpcore connection layer": httpcore_probe,
}


def cpu_per_probe(fn: Callable[[Target, float], ProbeResult], target: Target, probes: int, gap: float) -> float:
    """CPU seconds of this process per probe over `probes` probes, `gap` seconds apart."""
    started = _cpu()
    for _ in range(probes):
        result = fn(target, 5.0)
        if not result.ok:
            raise SystemExit(f"probe failed: {result}")
        if gap:
            time.sleep(gap)
    return (_cpu() - started) / probes


def measure(rounds: int, probes: int) -> dict[str, dict[str, list[float]]]:
    stand = subprocess.Popen([sys.executable, "-m", "bench.scale", "--standin", str(STANDIN_PORT)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    out: dict[str, dict[str, list[float]]] = {name: {str(gap): [] for gap in CADENCES} for name in VARIANTS}
    try:
        wait_until(lambda: http_get(STANDIN_PORT, "/__arrivals", timeout=2)[0] == 200, 30, "stand-in up")
        target = Target("bench", "local-1", f"http://127.0.0.1:{STANDIN_PORT}/svc-00/local-1", HttpsOptions())
        for fn in VARIANTS.values():  # warm up imports and caches
            cpu_per_probe(fn, target, 50, 0.0)
        for i in range(rounds):
            for gap in CADENCES:
                for name, fn in VARIANTS.items():
                    out[name][str(gap)].append(cpu_per_probe(fn, target, probes, gap))
            print(f"   round {i + 1}/{rounds}: " + ", ".join(
                f"{name} {out[name][str(gap)][-1] * 1e3:.3f} ms @{gap * 1e3:g} ms" for name in VARIANTS
                for gap in CADENCES), flush=True)
    finally:
        stand.terminate()
        stand.wait(timeout=10)
    return out


def result(samples: dict[str, dict[str, list[float]]], rounds: int, probes: int, seconds: float) -> BenchResult:
    rows = []
    for gap in CADENCES:
        ours = median(samples["h11 (the probe)"][str(gap)])
        theirs = median(samples["httpcore connection layer"][str(gap)])
        label = "back to back" if not gap else f"one every {gap * 1e3:g} ms"
        rows.append([label, f"{ours * 1e3:.3f}", f"{theirs * 1e3:.3f}", f"{theirs / ours:.2f}x"])
    body = "\n".join([
        section_header(command_line()),
        "The https probe's request (plain HTTP, a new connection per probe) spoken with h11 alone, as the probe "
        "does, against the same request through httpcore's connection layer (its `HTTPConnection` with a trace "
        "callback, as the probe did before), both on the probe's own sockets, stamps and deadline, alternating in "
        "one process against one local stand-in. The h11 column is the whole probe (options, address, result); "
        "the httpcore one only the request, so the comparison leans towards httpcore. CPU time (user + system) of "
        "this process per probe, the median "
        f"of {rounds} rounds of {probes} probes. One every 15 ms is the exporter's cadence at 1,000 pairs.",
        "",
        md_table(["cadence", "h11 ms CPU / probe", "httpcore ms CPU / probe", "httpcore / h11"], rows),
    ])
    cold = samples["h11 (the probe)"][str(CADENCES[-1])], samples["httpcore connection layer"][str(CADENCES[-1])]
    goals = [Goal("probe CPU, h11 against httpcore at the 1,000-pair cadence", "less CPU than httpcore",
                  f"{median(cold[0]) * 1e3:.3f} vs {median(cold[1]) * 1e3:.3f} ms",
                  median(cold[0]) < median(cold[1]))]
    return BenchResult(key="probe_cpu", title=SECTIONS["probe_cpu"], body=body, goals=goals, seconds=seconds,
                       raw={"samples": samples})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--probes", type=int, default=PROBES)
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    started = time.monotonic()
    samples = measure(args.rounds, args.probes)
    return finish(result(samples, args.rounds, args.probes, time.monotonic() - started), write=not args.no_report)


if __name__ == "__main__":
    sys.exit(main())
