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
import resource
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; Go's net/http allows 1 MB, nginx 8 KB per line
MAX_BODY_BYTES = 64 * 1024  # nothing here takes a body: /-/reload ignores it
REQUEST_TIMEOUT = 10.0  # from a request's first byte to its last (slow-loris); Go's ReadHeaderTimeout, in spirit
IDLE_TIMEOUT = 300.0  # an idle keep-alive connection; Prometheus keeps its own for 5 minutes
MAX_PIPELINED = 16  # requests queued on one connection before it stops reading
MAX_HEADERS = 100  # header lines in one request (each also counts 4 bytes of framing towards MAX_HEAD_BYTES)
FEED_SLICE = 4 * 1024  # bytes parsed per turn: a client pipelining megabytes cannot hold the loop
LINGER_SECONDS = 2.0  # after a final error answer: reading (and dropping) what the client still sends
LINGER_BYTES = 1024 * 1024  # ... at most this much, so that the client reads the answer, not a reset
MAX_LINGERING = 64  # refused connections lingering at once; beyond, they are closed at once
MAX_CONNECTIONS = 512  # open connections; at the limit a new one evicts the longest-idle one (docs/OPERATIONS.md)
FD_RESERVE = 256  # file descriptors kept free for probes, the cache and the log when sizing MAX_CONNECTIONS


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


# An answer, or the promise of one computed elsewhere (a reload on its own thread): the connection waits for it
# without holding a worker thread.
Answer = Response | Future[Response]


def then(answer: Answer, change: Callable[[Response], Response]) -> Answer:
    """`change` applied to an answer, now or when it arrives."""
    if isinstance(answer, Response):
        return change(answer)
    out: Future[Response] = Future()

    def done(arrived: Future[Response]) -> None:
        try:
            out.set_result(change(arrived.result()))
        except Exception as exc:
            out.set_exception(exc)

    answer.add_done_callback(done)
    return out


class Handler(Protocol):
    def respond_now(self, request: Request) -> Answer | None:
        """The answer, if it can be given at once on the event loop (it must not block); else None."""

    def respond(self, request: Request) -> Answer:
        """The answer, computed on a worker thread (may block: renders)."""


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
    header_count: int = 0


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
        self.pending = bytearray()  # received but not parsed yet: the queue was full, or the turn ended
        self.feeding = False  # a turn of parsing `pending` is scheduled
        self.failure: tuple[int, str] | None = None  # a 4xx to send once the requests before it are answered
        self.last_active = 0.0  # loop time of the latest request (or of the connection): eviction order
        self.lingering = -1  # bytes dropped since the final answer; -1 while not lingering

    # -- transport events --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_active = self.loop.time()
        accept_peer = self.server.accept_peer
        if (accept_peer is not None and self.server.ssl_context is not None
                and not accept_peer(transport.get_extra_info("peercert"))):
            log.debug("client certificate of %s refused (client_allowed_sans)", transport.get_extra_info("peername"))
            self.closing = True
            transport.abort()
            return
        if not self.server.admit(self):
            return
        self.server.connections.add(self)
        # a connection that never sends a byte is given the time to send a request, not the idle keep-alive time
        self._arm(min(self.server.request_timeout, self.server.idle_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self._disarm()

    def data_received(self, data: bytes) -> None:
        if self.lingering >= 0:
            self.lingering += len(data)
            if self.lingering > LINGER_BYTES:
                self._close()
            return
        if self.closing or self.failure is not None:
            return
        self.pending += data
        if not self.feeding:
            self._feed()

    def _feed(self) -> None:
        """Parse what was received, one slice per turn while the queue has room (fair to other connections).

        `feeding` is set while a turn is scheduled or running, so that answering (`_next`) does not schedule
        a second one: exactly one turn per connection per loop iteration.
        """
        self.feeding = True
        if not (self.closing or self.failure is not None or not self.pending or len(self.queue) >= MAX_PIPELINED):
            chunk = bytes(self.pending[:FEED_SLICE])
            del self.pending[:FEED_SLICE]
            self._parse(chunk)
        self.feeding = False
        if self.pending and self.failure is None and not self.closing and len(self.queue) < MAX_PIPELINED:
            self.feeding = True
            self.loop.call_soon(self._feed)
        self._pause_if_full()

    def _pause_if_full(self) -> None:
        if self.transport is None or self.closing:
            return
        if self.pending or len(self.queue) >= MAX_PIPELINED or self.failure is not None:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _parse(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as error:  # one of ours, raised in a callback
            cause = error.__context__
            if isinstance(cause, _HttpError):
                self._refuse(cause.status, str(cause))
            else:
                log.error("request parsing failed", exc_info=cause)
                self._refuse(400, "malformed request")
        except httptools.HttpParserError as error:
            self._refuse(400, f"malformed request: {error}")

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets its answers; then the connection ends.
        self.eof = True
        if self.lingering >= 0:
            return False
        return bool(self.queue or self.busy or self.pending)

    def pause_writing(self) -> None:
        # The client is not reading what it asked for: give it the time to send a request to start reading.
        self.writable = False
        self._arm(self.server.request_timeout)

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
        self._count_head(name + value, framing=4)  # ": " and CRLF: empty names and values still cost bytes
        assert self.parsing is not None
        self.parsing.header_count += 1
        if self.parsing.header_count > MAX_HEADERS:
            raise _HttpError(431, f"over {MAX_HEADERS} header fields")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.parsing.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        assert self.parsing is not None
        expect = self.parsing.headers.get("expect")
        if expect is None:
            return
        if expect.lower() != "100-continue":
            raise _HttpError(417, f"unsupported Expect: {expect}")
        if self.parser.get_http_version() == "1.1" and not self.queue and not self.busy and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # in order: nothing is owed before it

    def on_body(self, body: bytes) -> None:
        assert self.parsing is not None
        self.parsing.body += body
        if len(self.parsing.body) > MAX_BODY_BYTES:
            raise _HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        parsing, self.parsing = self.parsing, None
        assert parsing is not None
        if self.parser.should_upgrade():
            raise _HttpError(400, "protocol upgrades are not supported")
        method = self.parser.get_method().decode("latin-1")
        if method == "CONNECT":
            raise _HttpError(400, "CONNECT is not supported")
        try:
            url = httptools.parse_url(bytes(parsing.url))
        except httptools.HttpParserInvalidURLError:
            raise _HttpError(400, "invalid request target") from None
        path = url.path.decode("latin-1") if url.path else "/"
        query = url.query.decode("latin-1") if url.query else ""
        request = Request(method, path, query, parsing.headers, bytes(parsing.body))
        self.queue.append((request, self.parser.should_keep_alive(), self.parser.get_http_version()))
        self.last_active = self.loop.time()
        if self.writable:  # else the write-stall deadline set by pause_writing stands
            self._arm(self.server.idle_timeout)
        self._next()

    def _count_head(self, chunk: bytes, framing: int = 0) -> None:
        assert self.parsing is not None
        self.parsing.head_bytes += len(chunk) + framing
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
            if isinstance(response, Future):
                self._await(response, request, keep_alive, version)
                return
            self._write(response, keep_alive, version, head_only=request.method == "HEAD")
        if self.queue or self.busy or self.closing:
            return
        if self.failure is not None:
            status, message = self.failure
            self._write(Response.text(status, f"{message}\n"), keep_alive=False, version="1.1", linger=True)
        elif self.eof and not self.pending:
            self._close()
        elif self.pending and not self.feeding:
            self.feeding = True
            self.loop.call_soon(self._feed)  # the next slice on a later turn: other connections go first
        else:
            self._pause_if_full()

    def _await(self, answer: Future[Response], request: Request, keep_alive: bool, version: str) -> None:
        """Wait for an answer computed elsewhere, on the loop (no thread is held while waiting)."""
        self.busy = True
        waiting = asyncio.wrap_future(answer, loop=self.loop)
        waiting.add_done_callback(functools.partial(self._answered, request, keep_alive, version))

    def _answered(self, request: Request, keep_alive: bool, version: str, future: asyncio.Future[Answer]) -> None:
        self.busy = False
        if self.closing or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("%s %s failed", request.method, request.path, exc_info=error)
            response = Response.text(500, "internal error\n")
        else:
            answer = future.result()
            if isinstance(answer, Future):
                self._await(answer, request, keep_alive, version)
                return
            response = answer
        self._write(response, keep_alive, version, head_only=request.method == "HEAD")
        self._next()

    def _write(self, response: Response, keep_alive: bool, version: str, *, head_only: bool = False,
               linger: bool = False) -> None:
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
        if linger:
            self.linger()
        elif not keep_alive:
            self._close()

    def linger(self) -> None:
        """After a final answer the client may still be sending: half-close, then read and drop for a moment.

        Closing a socket with unread input makes the kernel send a reset, and the client may lose the answer
        before reading it (RFC 9112, section 9.6). A transport that cannot half-close (TLS) is closed.
        """
        assert self.transport is not None
        if self.eof or not self.transport.can_write_eof():
            self._close()
            return
        self.closing = True
        self.lingering = 0
        self.pending.clear()
        self.queue.clear()
        self.transport.write_eof()
        self.transport.resume_reading()
        self._arm(min(LINGER_SECONDS, self.server.request_timeout * 4))

    def _refuse(self, status: int, message: str) -> None:
        """A request we will not answer normally: answer the ones before it, then say why and close.

        Nothing after it is read: once the framing is in doubt, the stream can't be trusted.
        """
        if self.transport is None or self.closing or self.failure is not None:
            return
        self.failure = (status, message)
        self.parsing = None
        self.pending.clear()
        self.transport.pause_reading()
        self._next()

    def evict(self) -> None:
        """Closed to make room for a new connection (see HttpServer.admit)."""
        self._close()

    def _close(self, *, abort: bool = False) -> None:
        self.closing = True
        self._disarm()
        self.pending.clear()
        if self.transport is not None:
            if abort:
                self.transport.abort()  # drops what the client never read: its memory comes back now
            else:
                self.transport.close()

    @property
    def idle(self) -> bool:
        """Nothing in progress: waiting for a (first or next) request."""
        return (self.parsing is None and not self.queue and not self.busy and not self.pending
                and self.failure is None and not self.closing)

    # -- timeouts (checked by the server's sweep: a timer per connection and event costs more than the request) --

    def _arm(self, seconds: float) -> None:
        self.expires_at = self.loop.time() + seconds

    def _disarm(self) -> None:
        self.expires_at = math.inf

    def timed_out(self) -> None:
        self.expires_at = math.inf
        if self.lingering >= 0:
            self._close()
        elif not self.writable:
            self._close(abort=True)  # it asked and does not read: what it left unread is not kept
        elif self.busy or self.queue:
            self._arm(self.server.idle_timeout)  # our answer is pending: not the client's fault
        elif self.parsing is not None:
            self._refuse(408, f"request not complete within {self.server.request_timeout:g} s")
        else:
            self._close()


class HttpServer:
    """Binds at construction (so a port in use fails early and plainly), serves from a thread after start()."""

    def __init__(self, handler: Handler, host: str, port: int, *, workers: int = 4,
                 request_timeout: float = REQUEST_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int | None = None, ssl_context: ssl.SSLContext | None = None,
                 accept_peer: Callable[[Mapping[str, Any] | None], bool] | None = None) -> None:
        self.handler = handler
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections or connection_limit()
        self.ssl_context = ssl_context
        self.accept_peer = accept_peer  # checks a TLS client's certificate after the handshake
        self.refused = 0  # connections turned away because every slot was busy
        self.evicted = 0  # idle connections closed to make room
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

        self.loop.set_exception_handler(_quiet_exception_handler)

        async def serve() -> None:
            self._server = await self.loop.create_server(
                lambda: _Connection(self), sock=self._socket, ssl=self.ssl_context,
                ssl_handshake_timeout=self.request_timeout if self.ssl_context else None)
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

    def admit(self, connection: _Connection) -> bool:
        """Room for a new connection: evict the longest-idle one at the limit; with none idle, a 503 and close."""
        if sum(1 for c in self.connections if c.lingering < 0) < self.max_connections:
            return True
        idle = [c for c in self.connections if c.idle]
        if idle:
            oldest = min(idle, key=lambda c: c.last_active)
            self.connections.discard(oldest)
            oldest.evict()
            self.evicted += 1
            return True
        self.refused += 1
        assert connection.transport is not None
        lingering = sum(1 for c in self.connections if c.lingering >= 0)
        if lingering >= MAX_LINGERING:
            connection.closing = True
            connection.transport.abort()
            return False
        self.connections.add(connection)  # for the sweep: it lingers a moment, then goes
        connection._write(Response.text(503, "too many connections\n"), keep_alive=False, version="1.1",
                          linger=True)
        return False

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


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer when the file-descriptor limit cannot hold them beside FD_RESERVE.

    The soft limit is raised to the hard one first (as Go programs do at start), so the common 1024 soft limit
    does not cap a server whose hard limit is far higher.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
    except (ValueError, OSError):
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - FD_RESERVE))


_last_loop_errors: dict[str, float] = {}


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """asyncio's errors as one line each, at most once a minute per message (an accept() that fails for lack
    of file descriptors is retried every second, with a traceback each time, by asyncio's default handler)."""
    message = str(context.get("message") or "event loop error")
    error = context.get("exception")
    if error is not None:
        message = f"{message}: {type(error).__name__}: {error}"
    now = time.monotonic()
    if now - _last_loop_errors.get(message, -math.inf) < 60:
        return
    if len(_last_loop_errors) > 100:
        _last_loop_errors.clear()
    _last_loop_errors[message] = now
    log.error("%s", message)
