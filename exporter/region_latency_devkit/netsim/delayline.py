"""The delay line: hold every IPv4 packet between two TUN devices for its region's one-way delay, then pass it on.

One thread does everything (read, queue, release, control), so no packet ever waits for a GIL hand-off between a
reader and a releaser. Packets wait in a heap keyed by release time. The thread sleeps in `select()` until
`spin` (300 µs) before the next release, then busy-polls: sleeping alone wakes 50-200 µs late, busy-polling
all the time burns a core. The caller runs it in a process of its own, so no other Python code competes for its
GIL either.

Direction: packets read from the client TUN go to the regions TUN after the destination region's upstream delay
(rtt/2, keyed by destination address); packets read from the regions TUN go back after the source region's
downstream delay (rtt - rtt/2, keyed by source address). A TCP handshake therefore takes one RTT plus the line's
own wake-ups (it starts a packet's delay when it has read it).

The line also logs every TCP handshake it carries (`handshakes()`): when it read the client's SYN and when it
handed the SYN-ACK to the client's kernel, on CLOCK_MONOTONIC (Python's perf_counter and monotonic in every
process). With the client's own stamp before connect() that is the round trip the packets really took, line
wake-ups included: the truth a client's connect timing is checked against (bench/accuracy.py).
"""

from __future__ import annotations

import heapq
import os
import random
import select
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from region_latency_devkit.netsim.spec import RegionSpec

SPIN_NS = 300_000
IDLE_TIMEOUT = 0.2
READ_BATCH = 64
LATENESS_SAMPLES = 1 << 16
HANDSHAKES_KEPT = 1 << 16  # the handshake log keeps this many (oldest dropped first)
TCP = 6
SYN, ACK = 0x02, 0x10


@dataclass(slots=True)
class _Path:
    """Live state of one region: delays in ns, and the last release per direction (to keep packet order)."""

    up_ns: int
    down_ns: int
    jitter_ns: int
    loss: float
    last_up: int = 0
    last_down: int = 0
    packets: int = 0
    lost: int = 0

    @classmethod
    def from_spec(cls, spec: RegionSpec) -> _Path:
        rtt_ns = round(spec.rtt * 1e9)
        return cls(rtt_ns // 2, rtt_ns - rtt_ns // 2, round(spec.jitter * 1e9), spec.loss)


class DelayLine:
    """Forward packets between `client_fd` and `regions_fd` (non-blocking, one raw IPv4 packet per read/write)."""

    def __init__(self, client_fd: int, regions_fd: int, *, spin_ns: int = SPIN_NS, max_queue: int = 200_000,
                 mtu: int = 1500, seed: int | None = None, busy_read: bool = False) -> None:
        """`busy_read`: poll the TUNs without sleeping (a whole core), so that a packet's delay starts when the
        kernel queued it, not when a sleeping line woke up to read it (accuracy runs: docs/NETSIM.md)."""
        self._client_fd = client_fd
        self._busy_read = busy_read
        self._regions_fd = regions_fd
        self._spin_ns = spin_ns
        self._max_queue = max_queue
        self._bufsize = mtu + 64
        self._paths: dict[bytes, _Path] = {}
        self._names: dict[bytes, str] = {}
        self._heap: list[tuple[int, int, int, bytes]] = []
        self._seq = 0
        self._readers: dict[int, Callable[[], None]] = {}
        self._running = False
        self._random = random.Random(seed)
        self._lateness = array("q", bytes(8 * LATENESS_SAMPLES))
        self._late_count = 0
        self._forwarded = 0
        self._unrouted = 0
        self._overflow = 0
        self._write_errors = 0
        self._max_queued = 0
        # (region address, client port) -> [(SYN read ns, SYN-ACK handed over ns or 0), ...]
        self._handshakes: dict[tuple[bytes, int], list[list[int]]] = {}

    def set_region(self, address: str, spec: RegionSpec, name: str = "") -> None:
        """Add a region or change its path; packets already queued keep their release time (like a real link)."""
        key = bytes(int(part) for part in address.split("."))
        new = _Path.from_spec(spec)
        old = self._paths.get(key)
        if old is not None:
            new.last_up, new.last_down, new.packets, new.lost = old.last_up, old.last_down, old.packets, old.lost
        self._paths[key] = new
        self._names[key] = name or address

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Also watch FD (a control pipe) and call CALLBACK in the loop thread when it is readable."""
        self._readers[fd] = callback

    def stop(self) -> None:
        """Make `run` return (within IDLE_TIMEOUT when idle); safe from a callback or another thread."""
        self._running = False

    def run(self) -> None:
        """Forward until `stop()`."""
        if self._busy_read:
            self._run_busy()
            return
        mono = time.monotonic_ns
        select_ = select.select
        heap = self._heap
        spin = self._spin_ns
        client, regions = self._client_fd, self._regions_fd
        fds = [client, regions, *self._readers]
        self._running = True
        while self._running:
            if heap:
                wait = heap[0][0] - mono()
                if wait <= 0:
                    self._release(mono)
                    continue
                timeout = (wait - spin) / 1e9 if wait > spin else 0.0
            else:
                timeout = IDLE_TIMEOUT
            for fd in select_(fds, (), (), timeout)[0]:
                if fd == client:
                    self._receive(client, regions, upstream=True)
                elif fd == regions:
                    self._receive(regions, client, upstream=False)
                else:
                    self._readers[fd]()

    def _run_busy(self) -> None:
        """`run` without sleeping: read both TUNs, release what is due, look at the control fds once a ms."""
        mono = time.monotonic_ns
        select_ = select.select
        heap = self._heap
        client, regions = self._client_fd, self._regions_fd
        controls = list(self._readers)
        next_control = 0
        self._running = True
        while self._running:
            self._receive(client, regions, upstream=True)
            self._receive(regions, client, upstream=False)
            if heap and heap[0][0] <= mono():
                self._release(mono)
            now = mono()
            if now >= next_control:
                next_control = now + 1_000_000
                for fd in select_(controls, (), (), 0)[0]:
                    self._readers[fd]()

    def _receive(self, in_fd: int, out_fd: int, *, upstream: bool) -> None:
        mono = time.monotonic_ns
        heap = self._heap
        paths = self._paths
        rand = self._random.random
        for _ in range(READ_BATCH):
            try:
                pkt = os.read(in_fd, self._bufsize)
            except BlockingIOError:
                return
            except OSError:
                self._write_errors += 1
                return
            now = mono()
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                self._unrouted += 1
                continue
            path = paths.get(pkt[16:20] if upstream else pkt[12:16])
            if path is None:
                self._unrouted += 1
                continue
            if path.loss and (path.loss >= 1.0 or rand() < path.loss):
                path.lost += 1
                continue
            delay = path.up_ns if upstream else path.down_ns
            if path.jitter_ns:
                delay = max(0, delay + int((rand() - 0.5) * path.jitter_ns))
            release = now + delay
            if upstream:
                release = max(release, path.last_up)
                path.last_up = release
            else:
                release = max(release, path.last_down)
                path.last_down = release
            if len(heap) >= self._max_queue:
                self._overflow += 1
                continue
            path.packets += 1
            self._seq += 1
            heapq.heappush(heap, (release, self._seq, out_fd, pkt))
            if upstream and pkt[9] == TCP:
                self._log_syn(pkt, now)
        self._max_queued = max(self._max_queued, len(heap))

    def _release(self, mono: Callable[[], int]) -> None:
        heap = self._heap
        lateness = self._lateness
        mask = LATENESS_SAMPLES - 1
        while heap:
            now = mono()
            if heap[0][0] > now:
                return
            release, _, out_fd, pkt = heapq.heappop(heap)
            try:
                os.write(out_fd, pkt)
            except OSError:
                self._write_errors += 1
                continue
            if out_fd == self._client_fd and pkt[9] == TCP:  # handed over: the client's kernel has it
                self._log_synack(pkt, mono())
            lateness[self._late_count & mask] = now - release
            self._late_count += 1
            self._forwarded += 1

    def _log_syn(self, pkt: bytes, now: int) -> None:
        """A client's SYN (not SYN-ACK) read now: a handshake starts, keyed by (region address, client port)."""
        tcp = (pkt[0] & 0x0F) * 4
        if len(pkt) < tcp + 14 or pkt[tcp + 13] & (SYN | ACK) != SYN:
            return
        key = (pkt[16:20], int.from_bytes(pkt[tcp:tcp + 2], "big"))
        log = self._handshakes
        if len(log) >= HANDSHAKES_KEPT:
            del log[next(iter(log))]
        log.setdefault(key, []).append([now, 0])

    def _log_synack(self, pkt: bytes, now: int) -> None:
        """A region's SYN-ACK about to be handed to the client's kernel: the first one of its handshake counts."""
        tcp = (pkt[0] & 0x0F) * 4
        if len(pkt) < tcp + 14 or pkt[tcp + 13] & (SYN | ACK) != SYN | ACK:
            return
        entries = self._handshakes.get((pkt[12:16], int.from_bytes(pkt[tcp + 2:tcp + 4], "big")))
        if entries and not entries[-1][1]:
            entries[-1][1] = now

    def handshakes(self, reset: bool = False) -> list[tuple[str, int, float, float]]:
        """Every logged handshake whose SYN-ACK was handed over: (region address, client port, SYN read,
        SYN-ACK handed over), times in seconds on CLOCK_MONOTONIC."""
        out = [(".".join(map(str, address)), port, syn / 1e9, synack / 1e9)
               for (address, port), entries in self._handshakes.items() for syn, synack in entries if synack]
        if reset:
            self._handshakes.clear()
        return out

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """Counters and release lateness (seconds: how long after its due time a packet was written)."""
        n = min(self._late_count, LATENESS_SAMPLES)
        samples = sorted(self._lateness[:n])

        def pct(q: float) -> float | None:
            return samples[min(n - 1, int(q * n))] / 1e9 if n else None

        out: dict[str, Any] = {
            "forwarded": self._forwarded,
            "lost": sum(p.lost for p in self._paths.values()),
            "unrouted": self._unrouted,
            "overflow": self._overflow,
            "errors": self._write_errors,
            "queued": len(self._heap),
            "max_queued": self._max_queued,
            "lateness_samples": n,
            "lateness_p50": pct(0.50),
            "lateness_p99": pct(0.99),
            "lateness_max": samples[-1] / 1e9 if n else None,
            "regions": {self._names[k]: {"packets": p.packets, "lost": p.lost} for k, p in self._paths.items()},
        }
        if reset:
            self._late_count = self._forwarded = self._unrouted = self._overflow = self._write_errors = 0
            self._max_queued = len(self._heap)
            for p in self._paths.values():
                p.packets = p.lost = 0
        return out
