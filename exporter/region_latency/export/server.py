"""A small HTTP/1.1 server for the exporter's handful of endpoints: one event-loop thread, a few workers.

Why not wsgiref's threading server (what prometheus_client's `start_http_server` uses): it starts a thread per
connection, parses headers with the email package and always closes the connection, ~0.5 ms of CPU per request;
50 scrapers in a closed loop queued behind it for 25-45 ms (bench/BENCHMARKS.md, scrape cost). Here the loop
accepts and parses (httptools, the C parser uvicorn uses) and answers what is ready without a thread switch
(cached /metrics bytes, health); anything that may block (a render, a reload) goes to a small thread pool.

HTTP/1.1 keep-alive (Prometheus reuses its connection from scrape to scrape) and HTTP/1.0, pipelined requests
answered in order, HEAD, and limits against misbehaving clients: request head size, body size, the time to send
a request, idle keep-alive time. Handlers see a `Request` and return a `Response`; nothing here knows routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; Go's net/http allows 1 MB, nginx 8 KB per line
MAX_BODY_BYTES = 64 * 1024  # nothing here takes a body: /-/reload ignores it
REQUEST_TIMEOUT = 10.0  # from a request's first byte to its last (slow-loris); Go's ReadHeaderTimeout, in spirit
IDLE_TIMEOUT = 300.0  # an idle keep-alive connection; Prometheus keeps its own for 5 minutes
MAX_PIPELINED = 16  # requests queued on one connection before it stops reading


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def text(cls, status: int, text: str, *extra: tuple[str, str]) -> Response:
        return cls(status, (("Content-Type", "text/plain; charset=utf-8"), *extra), text.encode())


class Handler(Protocol):
    def respond_now(self, request: Request) -> Response | None:
        """The answer, if it can be given at once on the event loop (it must not block); else None."""

    def respond(self, request: Request) -> Response:
        """The answer, computed on a worker thread (may block: renders, reloads)."""


@functools.cache
def _status_line(status: int) -> str:
    phrase = HTTPStatus(status).phrase
    return f"HTTP/1.1 {status} {phrase}"


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, email.utils.formatdate(now, usegmt=True)
        return self._value


@dataclass(slots=True)
class _Parsing:
    url: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    head_bytes: int = 0


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order, keeps the connection while both want."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: _Parsing | None = None
        self.queue: deque[tuple[Request, bool, str]] = deque()  # (request, keep alive, HTTP version)
        self.busy = False  # a request is with a worker
        self.writable = True
        self.closing = False
        self.eof = False  # the client sent everything it will send
        self.expires_at = math.inf  # loop time; the server's sweep closes (or 408s) the connection after it

    # -- transport events --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        self._arm(self.server.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self._disarm()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as error:  # one of ours, raised in a callback
            cause = error.__context__
            if not isinstance(cause, _HttpError):
                raise
            self._fail(cause.status, str(cause))
        except httptools.HttpParserError as error:
            self._fail(400, f"malformed request: {error}")

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets its answers; then the connection ends.
        self.eof = True
        return bool(self.queue or self.busy)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._next()

    # -- parser callbacks (httptools) --

    def on_message_begin(self) -> None:
        self.parsing = _Parsing()
        self._arm(self.server.request_timeout)

    def on_url(self, url: bytes) -> None:
        self._count_head(url)
        assert self.parsing is not None
        self.parsing.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(name + value)
        assert self.parsing is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.parsing.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_body(self, body: bytes) -> None:
        assert self.parsing is not None
        self.parsing.body += body
        if len(self.parsing.body) > MAX_BODY_BYTES:
            raise _HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        parsing, self.parsing = self.parsing, None
        assert parsing is not None
        url = httptools.parse_url(bytes(parsing.url))
        path = url.path.decode("latin-1") if url.path else "/"
        query = url.query.decode("latin-1") if url.query else ""
        method = self.parser.get_method().decode("latin-1")
        request = Request(method, path, query, parsing.headers, bytes(parsing.body))
        self.queue.append((request, self.parser.should_keep_alive(), self.parser.get_http_version()))
        if len(self.queue) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        self._arm(self.server.idle_timeout)
        self._next()

    def _count_head(self, chunk: bytes) -> None:
        assert self.parsing is not None
        self.parsing.head_bytes += len(chunk)
        if self.parsing.head_bytes > MAX_HEAD_BYTES:
            raise _HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes")

    # -- answering --

    def _next(self) -> None:
        """Answer queued requests in order: at once when the handler can, else via a worker."""
        while self.queue and not self.busy and self.writable and not self.closing:
            request, keep_alive, version = self.queue.popleft()
            try:
                response = self.server.handler.respond_now(request)
            except Exception:
                log.exception("%s %s failed", request.method, request.path)
                response = Response.text(500, "internal error\n")
            if response is None:
                self.busy = True
                future = self.loop.run_in_executor(self.server.workers, self.server.handler.respond, request)
                future.add_done_callback(functools.partial(self._answered, request, keep_alive, version))
                return
            self._write(response, keep_alive, version, head_only=request.method == "HEAD")
        if self.eof and not self.queue and not self.busy:
            self._close()
        elif len(self.queue) < MAX_PIPELINED and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def _answered(self, request: Request, keep_alive: bool, version: str, future: asyncio.Future[Response]) -> None:
        self.busy = False
        if self.closing or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("%s %s failed", request.method, request.path, exc_info=error)
            response = Response.text(500, "internal error\n")
        else:
            response = future.result()
        self._write(response, keep_alive, version, head_only=request.method == "HEAD")
        self._next()

    def _write(self, response: Response, keep_alive: bool, version: str, *, head_only: bool = False) -> None:
        assert self.transport is not None
        head = [_status_line(response.status), f"Date: {self.server.clock.date()}"]
        head += (f"{name}: {value}" for name, value in response.headers)
        head.append(f"Content-Length: {len(response.body)}")
        if not keep_alive:
            head.append("Connection: close")
        elif version == "1.0":
            head.append("Connection: keep-alive")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.transport.write(data if head_only else data + response.body)
        if not keep_alive:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        """A request we will not answer normally: say why, then close (the stream can't be trusted after)."""
        if self.transport is None or self.closing:
            return
        self.queue.clear()
        self._write(Response.text(status, f"{message}\n"), keep_alive=False, version="1.1")

    def _close(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    # -- timeouts (checked by the server's sweep: a timer per connection and event costs more than the request) --

    def _arm(self, seconds: float) -> None:
        self.expires_at = self.loop.time() + seconds

    def _disarm(self) -> None:
        self.expires_at = math.inf

    def timed_out(self) -> None:
        self.expires_at = math.inf
        if self.busy or self.queue:
            self._arm(self.server.idle_timeout)  # our answer is pending: not the client's fault
        elif self.parsing is not None:
            self._fail(408, f"request not complete within {self.server.request_timeout:g} s")
        else:
            self._close()


class HttpServer:
    """Binds at construction (so a port in use fails early and plainly), serves from a thread after start()."""

    def __init__(self, handler: Handler, host: str, port: int, *, workers: int = 4,
                 request_timeout: float = REQUEST_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.handler = handler
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        dualstack = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()
        # SOMAXCONN, not socketserver's 5: a burst of scrapers would lose SYNs, which are retried after 1, 3, 7 s.
        self._socket = socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN,
                                            dualstack_ipv6=dualstack)
        self.loop = asyncio.new_event_loop()
        self.workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-worker")
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._started = threading.Event()
        self._sweep_every = min(1.0, request_timeout / 4, idle_timeout / 4)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            self._server = await self.loop.create_server(lambda: _Connection(self), sock=self._socket)
            self.loop.call_later(self._sweep_every, self._sweep)
            self._started.set()

        try:
            self.loop.run_until_complete(serve())
            self.loop.run_forever()
        finally:
            self._started.set()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _sweep(self) -> None:
        """Time out the connections whose deadline passed (idle keep-alive, a request sent too slowly)."""
        now = self.loop.time()
        for connection in [c for c in self.connections if c.expires_at <= now]:
            connection.timed_out()
        self.loop.call_later(self._sweep_every, self._sweep)

    def stop(self) -> None:
        """Stop accepting, drop open connections, let the thread end; idempotent."""
        if self._thread.is_alive():
            def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for connection in list(self.connections):
                    connection._close()
                self.loop.call_soon(self.loop.stop)

            with contextlib.suppress(RuntimeError):  # the loop already closed
                self.loop.call_soon_threadsafe(shutdown)
            self._thread.join(5)
        else:
            self._socket.close()
        self.workers.shutdown(wait=False, cancel_futures=True)
