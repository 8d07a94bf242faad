"""Fallback when namespaces cannot be made: a TCP proxy on 127.0.0.1 that delays each direction's data.

It delays bytes, not packets: the client's TCP handshake completes with the proxy at once (it cannot be delayed
this way), while TLS handshakes and request/response round trips see the configured RTT. Timers run on asyncio,
whose epoll waits round up to whole milliseconds, so data is released up to ~1 ms late. `loss` below 1 is
ignored (TCP hides single drops); `loss == 1` makes the region a black hole: connections are accepted but no
byte goes through, so requests time out.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from region_latency_devkit.netsim.spec import RegionSpec

_EOF = object()


@dataclass(slots=True)
class ProxyPath:
    """One region's delays, shared by all its proxied connections; `set_spec` changes it for new data."""

    up: float
    down: float
    jitter: float
    loss: float
    chunks: int = 0
    lateness: deque[float] | None = None

    @classmethod
    def from_spec(cls, spec: RegionSpec) -> ProxyPath:
        return cls(spec.rtt / 2, spec.rtt - spec.rtt / 2, spec.jitter, spec.loss, lateness=deque(maxlen=65536))

    def set_spec(self, spec: RegionSpec) -> None:
        self.up, self.down, self.jitter, self.loss = spec.rtt / 2, spec.rtt - spec.rtt / 2, spec.jitter, spec.loss


class _Direction:
    """Data of one direction of one connection, released in order at its due times by one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: ProxyPath, upstream: bool,
                 deliver: Callable[[object], None]) -> None:
        self._loop = loop
        self._path = path
        self._upstream = upstream
        self._deliver = deliver
        self._queue: deque[tuple[float, object]] = deque()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def push(self, item: object) -> None:
        path = self._path
        if item is not _EOF and path.loss >= 1.0:
            return
        delay = path.up if self._upstream else path.down
        if path.jitter:
            delay = max(0.0, delay + (random.random() - 0.5) * path.jitter)
        due = max(self._loop.time() + delay, self._last)
        self._last = due
        self._queue.append((due, item))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._release)

    def _release(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            due, item = self._queue.popleft()
            if self._path.lateness is not None:
                self._path.lateness.append(now - due)
            self._path.chunks += 1
            self._deliver(item)
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._release)


class _Side(asyncio.Protocol):
    """One of the two TCP connections of a proxied pair; what it receives goes to `peer` after the delay."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.outgoing: _Direction | None = None  # what this side received, on its way to the peer
        self.peer: _Side | None = None
        self._pending: list[object] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        for item in self._pending:
            self.write(item)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.outgoing is not None:
            self.outgoing.push(data)

    def eof_received(self) -> bool:
        if self.outgoing is not None:
            self.outgoing.push(_EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.outgoing is not None:
            self.outgoing.push(_EOF)

    def write(self, item: object) -> None:
        """Deliver released data (or the end of the stream) to this side's socket."""
        if self.transport is None:
            if not self.closed:
                self._pending.append(item)
            return
        if item is _EOF:
            self.transport.close()
        elif not self.transport.is_closing():
            assert isinstance(item, bytes)
            self.transport.write(item)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def start_proxy(path: ProxyPath, backend_host: str, backend_port: int, host: str = "127.0.0.1",
                      port: int = 0) -> asyncio.Server:
    """Listen on HOST:PORT; every connection is relayed to the backend with PATH's delays each way."""
    loop = asyncio.get_running_loop()

    def make_client_side() -> _Side:
        client, backend = _Side(), _Side()
        client.peer, backend.peer = backend, client
        client.outgoing = _Direction(loop, path, True, backend.write)
        backend.outgoing = _Direction(loop, path, False, client.write)

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: backend, backend_host, backend_port)
            except OSError:
                client.close()

        loop.create_task(connect())  # noqa: RUF006 - the transport keeps the connection alive
        return client

    return await loop.create_server(make_client_side, host, port, backlog=1024, reuse_address=True)


def lateness_percentiles(paths: list[ProxyPath]) -> dict[str, float | None]:
    samples = sorted(x for p in paths if p.lateness is not None for x in p.lateness)
    n = len(samples)
    return {
        "lateness_samples": n,
        "lateness_p50": samples[int(0.5 * n)] if n else None,
        "lateness_p99": samples[min(n - 1, int(0.99 * n))] if n else None,
        "lateness_max": samples[-1] if n else None,
    }
