"""Measure the simulator itself: `python -m region_latency_devkit.netsim.calibrate` prints the tables in docs/NETSIM.md.

1. TCP connect time from the client namespace against the configured RTT (several RTTs): median and p99 error.
2. HTTPS time to first byte on a kept-alive TLS connection (one round trip) against the RTT.
3. Release lateness of the delay line under steady UDP load at several packet rates, and the highest rate it
   sustains. The load is a UDP echo: a sender thread in the client namespace, an echo thread in the regions one.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from region_latency_devkit.netsim import netns
from region_latency_devkit.netsim.simulator import RegionSimulator
from region_latency_devkit.netsim.spec import RegionSpec

ECHO_PORT = 9


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    rtt: float
    n: int
    median_error: float
    p99_error: float
    min_error: float
    max_error: float


def _summary(rtt: float, samples: Sequence[float]) -> ErrorSummary:
    errors = sorted(s - rtt for s in samples)
    return ErrorSummary(rtt, len(errors), statistics.median(errors), errors[min(len(errors) - 1,
                        int(0.99 * len(errors)))], errors[0], errors[-1])


def connect_times(address: str, port: int, n: int, pause: float = 0.005) -> list[float]:
    """N sequential TCP connects (call in the client namespace); seconds from connect() to established."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.connect((address, port))
        out.append(time.perf_counter() - t0)
        s.close()
        time.sleep(pause)
    return out


def ttfb_times(address: str, port: int, ca_file: str, n: int, pause: float = 0.005) -> list[float]:
    """N requests on one kept-alive TLS connection; seconds from sendall() to the first response byte."""
    ctx = ssl.create_default_context(cafile=ca_file)
    out = []
    raw = socket.create_connection((address, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname=address) as s:
        request = f"GET / HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(request)
            data = s.recv(65536)
            out.append(time.perf_counter() - t0)
            length = int(data.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            while len(data) < data.index(b"\r\n\r\n") + 4 + length:
                data += s.recv(65536)
            time.sleep(pause)
    return out


def _udp_echo(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        sock.sendto(data, peer)


def _drain(s: socket.socket) -> int:
    n = 0
    try:
        while True:
            s.recv(2048)
            n += 1
    except BlockingIOError:
        return n


def _udp_load(address: str, pps: float, seconds: float, size: int) -> tuple[int, int]:
    """Send at a steady PPS for SECONDS (call in the client namespace); returns (sent, echoes received).

    Packets go out in 1 ms bursts with a sleep between, so the generator does not busy-loop on a core the
    delay line needs (on 2 cores that contention, not the delay line, would dominate the numbers).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = b"x" * size
    sent = received = 0
    start = time.perf_counter()
    tick = 0.001
    while (now := time.perf_counter()) < start + seconds:
        due = int((now - start) * pps) + 1
        while sent < due:
            try:
                s.sendto(payload, (address, ECHO_PORT))
            except BlockingIOError:
                break
            sent += 1
        received += _drain(s)
        time.sleep(max(0.0, tick - (time.perf_counter() - now)))
    time.sleep(0.3)
    received += _drain(s)
    s.close()
    return sent, received


def lateness_under_load(sim: RegionSimulator, region: str, pps: float, seconds: float,
                        size: int = 100) -> dict[str, float]:
    """Steady UDP echo load through REGION; the delay line's lateness percentiles over that run (µs)."""
    assert sim.regions_netns is not None
    echo = netns.call_in(sim.regions_netns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind((sim.address(region), ECHO_PORT))
    stop = threading.Event()
    thread = threading.Thread(target=_udp_echo, args=(echo, stop), daemon=True)
    thread.start()
    try:
        sim.stats(reset=True)
        t0 = time.perf_counter()
        sent, received = sim.call_in_client(_udp_load, sim.address(region), pps, seconds, size)
        elapsed = time.perf_counter() - t0
        stats = sim.stats(reset=True)
    finally:
        stop.set()
        thread.join()
        echo.close()
    return {
        "target_pps": pps, "sent_pps": sent / seconds, "echo_ratio": received / sent if sent else 0.0,
        "forwarded_pps": stats.forwarded / elapsed,
        "p50_us": (stats.lateness_p50 or 0) * 1e6, "p99_us": (stats.lateness_p99 or 0) * 1e6,
        "max_us": (stats.lateness_max or 0) * 1e6, "overflow": stats.overflow,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m region_latency_devkit.netsim.calibrate",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rtts", default="0,10,50,200", help="RTTs to check, ms (comma-separated)")
    p.add_argument("-n", type=int, default=50, help="samples per RTT")
    p.add_argument("--rates", default="1000,5000,10000,20000", help="UDP load rates, packets/s each way")
    p.add_argument("--load-seconds", type=float, default=3.0)
    p.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                   help="run the delay line with SCHED_FIFO priority PRIO (default: normal scheduling)")
    args = p.parse_args(argv)
    rtts = [float(x) / 1e3 for x in args.rtts.split(",")]
    regions = {f"rtt-{r * 1e3:g}ms": RegionSpec(rtt=r) for r in rtts}
    with RegionSimulator({**regions, "load": RegionSpec(rtt=0.010)}, mode="netns",
                         realtime_priority=args.realtime) as sim:
        print(f"# netsim calibration, {args.n} samples per RTT, delay line priority "
              f"{'SCHED_FIFO ' + str(args.realtime) if args.realtime else 'normal'}\n")
        print("| RTT ms | connect median err ms | p99 err ms | min..max ms | https ttfb median err ms | p99 err ms |")
        print("|---|---|---|---|---|---|")
        for name, spec in regions.items():
            addr = sim.address(name)
            connects = _summary(spec.rtt, sim.call_in_client(connect_times, addr, 443, args.n))
            ttfb = _summary(spec.rtt, sim.call_in_client(ttfb_times, addr, 443, str(sim.ca_file), args.n))
            print(f"| {spec.rtt * 1e3:g} | {connects.median_error * 1e3:.3f} | {connects.p99_error * 1e3:.3f} | "
                  f"{connects.min_error * 1e3:.3f}..{connects.max_error * 1e3:.3f} | "
                  f"{ttfb.median_error * 1e3:.3f} | {ttfb.p99_error * 1e3:.3f} |", flush=True)
        print("\n| UDP echo @10 ms, pps each way (sent) | forwarded pkt/s | echoed "
              "| lateness p50 µs | p99 µs | max µs |")
        print("|---|---|---|---|---|---|")
        for rate in (float(x) for x in args.rates.split(",")):
            r = lateness_under_load(sim, "load", rate, args.load_seconds)
            print(f"| {r['target_pps']:.0f} ({r['sent_pps']:.0f}) | {r['forwarded_pps']:.0f} | "
                  f"{r['echo_ratio'] * 100:.1f}% | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['max_us']:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
