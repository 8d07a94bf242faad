"""The `https` probe: one real HTTP(S) request on a fresh connection, every phase timed at the socket.

Phases: `dns` (resolved here, before connecting), `connect` (TCP handshake to the resolved address: the
kernel's tcpi_rtt where it has one, else socket stamps; `ProbeResult.connect_timing` says which),
`tls` (TLS handshake), `ttfb` (request handed to the kernel -> the response's first bytes arrived) and
`total` (probe start -> response body read, body capped at 64 KiB). Phases are stamped around the
socket calls themselves (SocketStamps); the exchange names the step a failure happened in.

The latency that feeds the tracker is `ttfb`: on an established connection it is one request round
trip plus the server's think time, which is what a pooled SDK client (boto3 keeps connections alive)
pays on every call. `connect` and `tls` are paid once per connection and are exported as phases. The
`measure` option changes that: `warm` sends the request on a connection kept alive between probes (one per
endpoint address; a probe that had to connect sends a first request, then the measured one), `cold` ranks by
a new connection's whole network cost, dns + connect + tls + ttfb (docs/PROBES.md, cold and warm).

The request is HTTP/1.1 spoken by h11 (the protocol engine under httpcore and httpx) on a network layer
that clamps every socket operation to what is left of the probe's deadline: per-operation timeouts alone
would let a server that trickles bytes or accepts and never answers hold a probe for several timeouts.
The layer makes its own sockets (TCP_NODELAY set before connecting) and runs its own TLS handshake loop,
so `connect` covers the kernel connect alone and `tls` the handshake's network part (ClientHello sent ->
the server's flight received), not the client's own TLS CPU. httpcore's connection and pool layers on top
of h11 cost about a fifth of a probe's CPU at the exporter's cadence and did nothing the probe needs
(bench/probe_cpu.py).

Options (`HttpsOptions`, validated once when the configuration loads):
  path         request path and query (default: the URL's path, else "/")
  method       HTTP method (default "GET")
  headers      extra request headers (mapping)
  port         overrides the URL's port
  ip_version   4, 6 or None (default: the resolver's first address)
  measure      "ttfb" (default), "warm" (a kept-alive connection's request) or "cold" (dns+connect+tls+ttfb)
  ca_file      path to a PEM CA bundle to trust instead of the default (certifi) bundle
  verify       True (default), False (no verification), a CA bundle path, or an ssl.SSLContext
  insecure     True disables certificate verification (default False)
Any HTTP status counts as reachable; the status is recorded in ProbeResult.status.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

import certifi
import h11
from pydantic import PrivateAttr, field_validator, model_validator

from region_latency._version import __version__
from region_latency.probes.base import (
    FAMILY_UNREACHABLE_ERRNOS,
    ConnectTiming,
    Deadline,
    Endpoint,
    ErrorKind,
    IpVersion,
    Port,
    ProbeError,
    ProbeResult,
    Target,
    TlsOptions,
    describe,
    lookup_address,
    parse_endpoint,
    timed_connect,
)

MAX_BODY = 64 * 1024
USER_AGENT = f"region-latency-exporter/{__version__}"
_METHOD = re.compile(r"^[A-Z]{1,16}$")
READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 100 * 1024  # a response head larger than this is not HTTP the probe accepts (as httpcore)
ALPN = ["http/1.1"]


class HttpsOptions(TlsOptions):
    """The https probe's options, validated once (a CA bundle is loaded then, not per probe)."""

    kind: ClassVar[str] = "https"
    path: str | None = None  # request path and query; None: the URL's
    method: str = "GET"
    headers: dict[str, str] = {}
    port: Port = None
    ip_version: IpVersion = None
    measure: Literal["ttfb", "warm", "cold"] = "ttfb"  # what feeds the tracker: see the module docstring

    _ssl_context: ssl.SSLContext | None = PrivateAttr(default=None)
    _requests: dict[Endpoint, h11.Request] = PrivateAttr(default_factory=dict)  # request_event's, per endpoint

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, path: Any) -> Any:
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ValueError(f"https option 'path' must be a string starting with '/', got {path!r}")
        return path

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method: Any) -> Any:
        if not isinstance(method, str) or not _METHOD.match(method.upper()):
            raise ValueError(f"https option 'method' must be an HTTP method name, got {method!r}")
        return method.upper()

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, headers: Any) -> Any:
        headers = headers or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError(f"https option 'headers' must map strings to strings, got {headers!r}")
        return dict(headers)

    @field_validator("measure", mode="before")
    @classmethod
    def _measure(cls, measure: Any) -> Any:
        if measure not in ("ttfb", "warm", "cold"):
            raise ValueError(f"https option 'measure' must be ttfb, warm or cold, got {measure!r}")
        return measure

    @model_validator(mode="after")
    def _context(self) -> HttpsOptions:
        self._ssl_context = tls_context(self)
        if self._ssl_context is not None:
            self._ssl_context.set_alpn_protocols(ALPN)  # a user's context too, as an HTTP client would
        return self

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The SSLContext the TLS options ask for; None means the default (certifi) one."""
        return self._ssl_context


def check_target(target: Target) -> None:
    """ValueError for a bad URL or option (what `probe` would refuse at run time)."""
    options = HttpsOptions.parse(target.options)
    endpoint = parse_endpoint(target.url, options.port)
    if endpoint.scheme not in ("https", "http"):
        raise ValueError(f"https probe needs an https:// (or http://) URL, got {target.url!r}")


def probe(target: Target, timeout: float) -> ProbeResult:
    """One HTTP(S) request to the target on a fresh connection; the result's latency is its `ttfb`."""
    deadline = Deadline(timeout)
    options = HttpsOptions.parse(target.options)
    endpoint = parse_endpoint(target.url, options.port)
    if endpoint.scheme not in ("https", "http"):
        raise ValueError(f"https probe needs an https:// (or http://) URL, got {target.url!r}")
    phases: dict[str, float] = {}
    address: str | None = None
    try:
        found = lookup_address(endpoint.host, endpoint.port, deadline, options.ip_version)
        address = found.address
        if found.seconds is not None:
            phases["dns"] = found.seconds
        if options.measure == "warm":
            return _warm_request(endpoint, found.address, options, deadline, phases)
        result = _request(endpoint, found.address, options, deadline, phases)
        if options.measure == "cold" and result.ok:  # a first call's whole network cost on a new connection
            cold = sum(result.phases.get(phase, 0.0) for phase in ("dns", "connect", "tls", "ttfb"))
            result = dataclasses.replace(result, latency=cold)
        return result
    except ProbeError as exc:
        return ProbeResult.failure(exc.kind, exc.detail, phases, address=address)


def tls_context(options: TlsOptions) -> ssl.SSLContext | None:
    """The SSLContext the options ask for (`verify`, `ca_file`, `insecure`); None means the default one."""
    if isinstance(options.verify, ssl.SSLContext):
        return options.verify
    if not options.verifies:
        return _insecure_context()
    path = options.ca_bundle
    return None if path is None else _ca_file_context(path)


@functools.lru_cache(maxsize=32)
def _ca_file_context(path: str) -> ssl.SSLContext:
    """Contexts are cached: loading a CA bundle costs milliseconds and must not happen per probe."""
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA bundle {path!r}: {describe(exc)}") from None


@functools.lru_cache(maxsize=1)
def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(ALPN)
    return context


@functools.lru_cache(maxsize=1)
def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class StreamError(Exception):
    """A socket operation of the probe failed; `__cause__` is the OSError or SSLError behind it."""


class StreamTimeoutError(StreamError):
    """A socket operation of the probe ran out of the probe's deadline."""


class Exchange:
    """One HTTP/1.1 connection of a probe: h11 on a DeadlineStream. `step` names what it was doing (connecting,
    the TLS handshake, sending the request, waiting for the response, reading the body), so a failure names
    the step it happened in."""

    def __init__(self) -> None:
        self.step = "connect_tcp"
        self.stream: DeadlineStream | None = None
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)

    def connect(self, backend: DeadlineBackend, endpoint: Endpoint, address: str,
                context: ssl.SSLContext | None) -> Exchange:
        """Connect to `address` (and run the TLS handshake when `context` is given; SNI keeps the name)."""
        self.step = "connect_tcp"
        stream = backend.connect_tcp(address, endpoint.port)
        if context is not None:
            self.step = "start_tls"
            stream = stream.start_tls(context, endpoint.host)  # SNI and the certificate check: the name (or IP)
        self.stream = stream
        return self

    def request(self, event: h11.Request) -> int:
        """Send one request (no body) and read its response, the body up to MAX_BODY; the response's status."""
        assert self.stream is not None
        http, stream = self.http, self.stream
        self.step = "send_request_headers"
        stream.write(http.send(event) + (http.send(h11.EndOfMessage()) or b""))
        self.step = "receive_response_headers"
        status: int | None = None
        received = 0
        while True:
            answer = http.next_event()
            if answer is h11.NEED_DATA:
                data = stream.read(READ_SIZE)
                if not data and status is None:
                    raise StreamError("server disconnected without sending a response")
                http.receive_data(data)
            elif isinstance(answer, h11.Response):
                status = answer.status_code
                self.step = "receive_response_body"
            elif isinstance(answer, h11.Data):
                received += len(answer.data)
                if received >= MAX_BODY:  # enough for `total`; the connection cannot carry another request
                    return status or 0
            elif isinstance(answer, h11.EndOfMessage | h11.ConnectionClosed) or answer is h11.PAUSED:
                return status or 0  # PAUSED: the server switched protocols (a CONNECT or Upgrade answered)
            # h11.InformationalResponse (1xx): the final response follows

    def reusable(self) -> bool:
        """Whether the connection can carry the next request (`measure: warm`): the last exchange finished on both
        sides, neither asked to close, and nothing arrived while it was idle (a FIN, or bytes nobody asked for).
        When it can, h11 is readied for that request (its next cycle started): ask once per request."""
        if self.stream is None or self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
            return False
        if self.stream.readable_now():
            return False
        self.http.start_next_cycle()
        return True

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def _request(
    endpoint: Endpoint, address: str, options: HttpsOptions, deadline: Deadline, phases: dict[str, float]
) -> ProbeResult:
    """Send the request to `address` (Host header and SNI keep the endpoint's name) on a new connection."""
    backend = DeadlineBackend(deadline)
    exchange = Exchange()
    try:
        exchange.connect(backend, endpoint, address, _context_for(endpoint, options))
        status = exchange.request(request_event(endpoint, options))
    except Exception as exc:
        phases.update(backend.stamps.phases())
        raise _probe_error(exc, exchange.step, deadline, options) from None
    finally:
        exchange.close()
    phases.update(backend.stamps.phases())
    phases["total"] = deadline.elapsed()
    if "ttfb" not in phases:  # cannot happen with HTTP/1.1; guard rather than report a made-up number
        raise ProbeError(ErrorKind.OTHER, "response arrived but no request timing was recorded")
    return ProbeResult(latency=phases["ttfb"], phases=MappingProxyType(phases), status=status, address=address,
                       tls_version=backend.stamps.tls_version, connect_timing=backend.stamps.connect_timing)


def _probe_error(exc: Exception, step: str, deadline: Deadline, options: HttpsOptions) -> ProbeError:
    """What one failed exchange means (a ProbeError passes through); anything else is a bug and propagates."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, StreamTimeoutError):
        return ProbeError(ErrorKind.TIMEOUT, _timeout_detail(step, deadline))
    if isinstance(exc, StreamError | h11.ProtocolError | OSError):
        return ProbeError(*_classify(exc, step, deadline, options.ip_version is not None))
    raise exc


def _context_for(endpoint: Endpoint, options: HttpsOptions) -> ssl.SSLContext | None:
    if endpoint.scheme != "https":
        return None
    return options.ssl_context or _default_context()


def request_event(endpoint: Endpoint, options: HttpsOptions) -> h11.Request:
    """The request a probe of `endpoint` sends, built (and checked by h11) once per target and endpoint rather than
    on every probe: h11 never changes an event it sends."""
    requests = options._requests
    event = requests.get(endpoint)
    if event is None:
        if len(requests) >= 1024:  # endpoints are a target's regions; a bound all the same
            requests.clear()
        event = requests[endpoint] = h11.Request(method=options.method, target=options.path or endpoint.path,
                                                 headers=_headers(endpoint, options))
    return event


def _headers(endpoint: Endpoint, options: HttpsOptions) -> list[tuple[str, str]]:
    """The request's headers: Host keeps the endpoint's name (the request goes to an address); the target's own
    `headers` replace the defaults of the same name."""
    headers = {"host": ("Host", endpoint.host_header()), "user-agent": ("User-Agent", USER_AGENT),
               "accept": ("Accept", "*/*")}
    for name, value in options.headers.items():
        headers[name.lower()] = (name, value)
    return list(headers.values())


# -- warm: a kept-alive connection per endpoint ------------------------------------------------------------

KEPT_IDLE_LIMIT = 600.0
"""A kept connection unused this long (seconds; e.g. its region left the configuration) is closed."""


class KeptConnection:
    """One endpoint's kept-alive connection (`measure: warm`), on a backend whose deadline and stamps are renewed
    for each probe. A connection that cannot carry the next request (the server closed it: it reads as readable
    at EOF when idle) is replaced by a new one on the next request."""

    def __init__(self) -> None:
        self.backend = DeadlineBackend(Deadline(1.0))
        self.exchange: Exchange | None = None
        self.lock = threading.Lock()
        self.used_at = time.monotonic()

    def close(self) -> None:
        if self.exchange is not None:
            self.exchange.close()
            self.exchange = None


_kept: dict[tuple[Any, ...], KeptConnection] = {}
_kept_lock = threading.Lock()


def _kept_connection(key: tuple[Any, ...]) -> KeptConnection:
    """The kept connection for `key`, made when missing; connections idle past KEPT_IDLE_LIMIT are closed."""
    now = time.monotonic()
    with _kept_lock:
        idle = [k for k, kept in _kept.items()
                if k != key and now - kept.used_at > KEPT_IDLE_LIMIT and not kept.lock.locked()]
        closing = [_kept.pop(k) for k in idle]
        kept = _kept.get(key)
        if kept is None:
            kept = _kept[key] = KeptConnection()
    for old in closing:
        old.close()
    return kept


def close_kept_connections() -> None:
    """Close every kept-alive connection (tests; a process that stops probing)."""
    with _kept_lock:
        kept = list(_kept.values())
        _kept.clear()
    for connection in kept:
        connection.close()


def _warm_request(
    endpoint: Endpoint, address: str, options: HttpsOptions, deadline: Deadline, phases: dict[str, float]
) -> ProbeResult:
    """One request on the endpoint's kept-alive connection; the latency is its `ttfb`.

    Every warm sample is a request on a connection that carried one before: when there is none (the first probe,
    or the server closed it) the probe connects, sends a request (its `connect` and `tls` are this result's
    phases), then sends the measured one. A kept connection that breaks under the request (the server closed it
    as the request left) is replaced once, within the deadline.
    """
    context = _context_for(endpoint, options)
    key = (endpoint.scheme, address, endpoint.port, endpoint.host, id(context))
    kept = _kept_connection(key)
    if not kept.lock.acquire(timeout=max(deadline.remaining(), 0.001)):
        raise ProbeError(ErrorKind.TIMEOUT, _timeout_detail("connect_tcp", deadline))
    try:
        kept.used_at = time.monotonic()
        opened: SocketStamps | None = None
        broken = 0
        event = request_event(endpoint, options)
        while True:
            kept.backend.begin(deadline)
            exchange = kept.exchange
            reused = exchange is not None and exchange.reusable()
            try:
                if not reused:
                    kept.close()
                    exchange = kept.exchange = Exchange()
                    exchange.connect(kept.backend, endpoint, address, context)
                assert exchange is not None
                status = exchange.request(event)
            except Exception as exc:
                step = exchange.step if exchange is not None else "connect_tcp"
                kept.close()
                if reused and not isinstance(exc, StreamTimeoutError) and broken == 0 and not deadline.expired:
                    broken += 1  # a kept connection the server had closed under the request: connect again
                    continue
                raise _probe_error(exc, step, deadline, options) from None
            stamps = kept.backend.stamps
            if stamps.connect is not None and opened is None:
                opened = stamps  # a new connection: its first request is not a warm one
                continue
            break
    finally:
        kept.lock.release()
    if opened is not None:
        phases.update({name: value for name, value in opened.phases().items() if name in ("connect", "tls")})
    measured = stamps.phases()
    if "ttfb" not in measured:
        raise ProbeError(ErrorKind.OTHER, "response arrived but no request timing was recorded")
    phases["ttfb"] = measured["ttfb"]
    phases["total"] = deadline.elapsed()
    return ProbeResult(latency=phases["ttfb"], phases=MappingProxyType(phases), status=status, address=address,
                       tls_version=opened.tls_version if opened is not None else None,
                       connect_timing=opened.connect_timing if opened is not None else None)


def _timeout_detail(step: str, deadline: Deadline) -> str:
    return f"no answer within {deadline.timeout:g}s (during {_STEP_NAMES.get(step, step)})"


_STEP_NAMES = {
    "connect_tcp": "TCP connect",
    "start_tls": "TLS handshake",
    "send_request_headers": "sending the request",
    "send_request_body": "sending the request",
    "receive_response_headers": "waiting for the response",
    "receive_response_body": "reading the response body",
}


def _classify(exc: BaseException, step: str, deadline: Deadline, family_asked: bool = False
              ) -> tuple[ErrorKind, str]:
    """Map a socket or HTTP failure to an ErrorKind, using the cause and the step it happened in.
    `family_asked`: the target asked for an address family (`ip_version`): a connect error saying this host cannot
    use it is `ip_family_unavailable`."""
    cause = exc.__cause__ or exc.__context__ or exc
    where = _STEP_NAMES.get(step, step)
    if (family_asked and step == "connect_tcp" and isinstance(cause, OSError)
            and cause.errno in FAMILY_UNREACHABLE_ERRNOS):
        return ErrorKind.FAMILY_UNAVAILABLE, f"{where}: {describe(cause)}"
    if isinstance(cause, TimeoutError) or deadline.expired:
        return ErrorKind.TIMEOUT, _timeout_detail(step, deadline)
    if isinstance(cause, ssl.SSLError) or step == "start_tls":
        return ErrorKind.TLS, f"TLS handshake failed: {_ssl_reason(cause)}"
    if step == "connect_tcp":
        if isinstance(cause, ConnectionRefusedError | ConnectionResetError):
            return ErrorKind.REFUSED, f"{where}: {describe(cause)}"
        return ErrorKind.CONNECTION, f"{where}: {describe(cause)}"
    if isinstance(exc, h11.ProtocolError):  # the server's bytes are not HTTP/1.1
        return ErrorKind.HTTP, f"not a valid HTTP response: {describe(exc)}"
    return ErrorKind.CONNECTION, f"{where}: {describe(cause)}"


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return describe(exc)


class SocketStamps:
    """perf_counter stamps taken right at the socket calls.

    Stamps around the HTTP client's steps would also time its own work (request encoding, response header
    parsing, event dispatch); stamping the socket calls keeps that Python overhead out of the phases, as
    blackbox_exporter's httptrace hooks do. See bench/BENCHMARKS.md (accuracy).
    """

    def __init__(self) -> None:
        self.connect: tuple[float, float] | None = None
        self.connect_kernel: float | None = None  # the kernel's SYN -> SYN-ACK round trip (tcpi_rtt), if it has one
        self.tls: tuple[float, float] | None = None
        self.first_write: float | None = None
        self.first_read: float | None = None
        self.tls_version: str | None = None  # what the handshake negotiated ("TLSv1.3")

    def phases(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.connect is not None:
            out["connect"] = self.connect[1] - self.connect[0] if self.connect_kernel is None else self.connect_kernel
        if self.tls is not None:
            out["tls"] = self.tls[1] - self.tls[0]
        if self.first_write is not None and self.first_read is not None:
            out["ttfb"] = self.first_read - self.first_write
        return out

    @property
    def connect_timing(self) -> ConnectTiming | None:
        """Which clock timed the `connect` phase: the kernel's tcpi_rtt or our stamps (None: no connect)."""
        if self.connect is None:
            return None
        return ConnectTiming.STAMPS if self.connect_kernel is None else ConnectTiming.KERNEL


class ProbeWindow:
    """What the sockets of one probe answer to: its deadline and its stamps. A fresh connection lives in one
    window; a kept-alive one (`measure: warm`) gets a new window for each probe (`DeadlineBackend.begin`)."""

    __slots__ = ("deadline", "stamps")

    def __init__(self, deadline: Deadline, stamps: SocketStamps | None = None) -> None:
        self.deadline = deadline
        self.stamps = stamps or SocketStamps()


class DeadlineBackend:
    """Makes the probe's connections; every socket operation on them gets only what is left of the deadline.

    It makes its own sockets (rather than `socket.create_connection`, which also runs getaddrinfo and the
    socket set-up inside the connect) so that the `connect` stamp covers the kernel's
    connect alone, SYN -> SYN-ACK, and its own TLS handshake loop so that the `tls` stamp covers the
    handshake's network part alone and every wait in it is bounded by the deadline.
    """

    def __init__(self, deadline: Deadline, stamps: SocketStamps | None = None) -> None:
        self.window = ProbeWindow(deadline, stamps)

    @property
    def stamps(self) -> SocketStamps:
        return self.window.stamps

    @property
    def _deadline(self) -> Deadline:
        return self.window.deadline

    def begin(self, deadline: Deadline) -> None:
        """A new probe on the connections made here: its deadline and fresh stamps, for every stream alike."""
        self.window.deadline = deadline
        self.window.stamps = SocketStamps()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> DeadlineStream:
        """Connect to `host` (an IP address: the probe resolves names itself, as its own `dns` phase).

        Socket, TCP_NODELAY, options and source address are set up first; the stamp covers only the
        handshake on the wire: SYN handed to the kernel -> the wake-up at which it completed (`timed_connect`).
        """
        budget = _budget(self._deadline, timeout)
        try:  # numeric only: a name here would be a DNS lookup hidden in `connect` and outside the deadline
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        except (OSError, UnicodeError) as exc:
            raise StreamError(f"not an IP address: {host!r} ({describe(exc)})") from exc
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # before the first byte: no Nagle delay
            for option in socket_options or ():
                sock.setsockopt(*option)
            if local_address is not None:
                sock.bind((local_address, 0))
            span = timed_connect(sock, sockaddr, budget)
        except TimeoutError as exc:
            sock.close()
            raise StreamTimeoutError(f"connect did not finish within {budget:.3g}s") from exc
        except OSError as exc:
            sock.close()
            raise StreamError(describe(exc)) from exc
        self.stamps.connect = (span.started, span.ended)
        self.stamps.connect_kernel = span.kernel
        return DeadlineStream(sock, self.window)



class DeadlineStream:
    """A socket (plain, then TLS) whose reads, writes and TLS handshake never outlive the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline | ProbeWindow, stamps: SocketStamps | None = None
                 ) -> None:
        self._sock = sock
        self._window = deadline if isinstance(deadline, ProbeWindow) else ProbeWindow(deadline, stamps)

    @property
    def _deadline(self) -> Deadline:
        return self._window.deadline

    @property
    def _stamps(self) -> SocketStamps:
        return self._window.stamps

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _budget(self._deadline, timeout)
        if self._stamps.first_read is None and self._stamps.first_write is not None:
            return self._first_response_read(max_bytes, budget)
        try:
            self._sock.settimeout(budget)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise StreamTimeoutError(describe(exc)) from exc
        except OSError as exc:
            raise StreamError(describe(exc)) from exc

    def _first_response_read(self, max_bytes: int, budget: float) -> bytes:
        """The read that ends `ttfb`, in a loop of our own so that the stamp is the wake-up at which the response's
        first bytes arrived, not the return of `recv()`: the TLS session tickets that arrive first and the
        record decryption are the client's CPU (about 0.1 ms with OpenSSL), not the round trip."""
        sock = self._sock
        sock.setblocking(False)
        try:
            data, _, arrived = _run_waiting(lambda: sock.recv(max_bytes), sock, time.perf_counter() + budget,
                                            "no response before the deadline")
        except OSError as exc:
            raise StreamError(describe(exc)) from exc
        if data:
            self._stamps.first_read = time.perf_counter() if arrived is None else arrived
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        view = memoryview(buffer)
        try:
            while view:
                self._sock.settimeout(_budget(self._deadline, timeout))
                view = view[self._sock.send(view):]
                if self._stamps.first_write is None:  # the request's first bytes are the kernel's now
                    self._stamps.first_write = time.perf_counter()
        except TimeoutError as exc:
            raise StreamTimeoutError(describe(exc)) from exc
        except OSError as exc:
            raise StreamError(describe(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> DeadlineStream:
        """Wrap the socket, then drive `do_handshake()` non-blocking, each wait bounded by the deadline.

        The `tls` stamp spans the handshake's network part: ClientHello handed to the kernel -> the server's
        last handshake flight arrived (see `_handshake`); neither the SSLSocket's construction nor the client's
        own handshake CPU is in it.
        """
        budget = _budget(self._deadline, timeout)
        if isinstance(self._sock, ssl.SSLSocket):  # TLS in TLS (HTTPS proxies): never asked by this probe
            raise StreamError("TLS over TLS is not supported")
        until = time.perf_counter() + budget
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self._sock.close()
            raise StreamError(describe(exc)) from exc
        try:
            self._stamps.tls = _handshake(tls, until)
            self._stamps.tls_version = tls.version()
        except BaseException:
            tls.close()
            raise
        return DeadlineStream(tls, self._window)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            return self.readable_now()
        return None

    def readable_now(self) -> bool:
        """Whether bytes (or the peer's FIN) are waiting: an idle kept connection is then not reusable."""
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        return bool(poller.poll(0))


def _handshake(tls: ssl.SSLSocket, until: float) -> tuple[float, float]:
    """Run the TLS handshake on a non-blocking socket until done or `until` (perf_counter); the span of its
    network part: (ClientHello handed to the kernel, the server's last handshake flight arrived).

    Both ends are network events, as `connect`'s are: the client's own CPU before the ClientHello leaves (key
    share generation) and after the server's flight is in (verifying the chain and CertificateVerify, the key
    schedule, writing Finished) is OpenSSL's, 0.6-1.1 ms per handshake here, the same in every region, and not
    latency to the region (docs/PROBES.md, TLS handshake cost). One loop turn per flight the client waits for
    (TLS 1.3 with a whole server flight: one wait). An SSLError (certificate, alert) or OSError becomes
    ConnectError, running out of time ConnectTimeout.
    """
    tls.setblocking(False)
    started = time.perf_counter()
    try:
        _, sent, arrived = _run_waiting(tls.do_handshake, tls, until,
                                        "TLS handshake did not finish before the deadline")
    except OSError as exc:  # ssl.SSLError is an OSError
        raise StreamError(describe(exc)) from exc
    done = time.perf_counter()
    return (started if sent is None else sent), (done if arrived is None else arrived)


_T = TypeVar("_T")


def _run_waiting(call: Callable[[], _T], sock: socket.socket, until: float, message: str
                 ) -> tuple[_T, float | None, float | None]:
    """Call `call` (an operation on the non-blocking `sock`) until it completes, polling for what it waits for
    and never past `until` (perf_counter; then StreamTimeoutError(message)). Returns its result, when it first had to
    wait for data (what it wrote is the kernel's by then), and the last wake-up for data before it completed."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    first_wait: float | None = None
    last_wake: float | None = None
    while True:
        try:
            return call(), first_wait, last_wake
        except (ssl.SSLWantReadError, BlockingIOError):
            events = select.POLLIN
            if first_wait is None:
                first_wait = time.perf_counter()
        except ssl.SSLWantWriteError:  # a TLS renegotiation or key update wants to write first
            events = select.POLLOUT
        left = until - time.perf_counter()
        if left <= 0:
            raise StreamTimeoutError(message)
        poller.modify(sock, events)
        if not poller.poll(math.ceil(left * 1000)):
            raise StreamTimeoutError(message)
        if events == select.POLLIN:
            last_wake = time.perf_counter()


def _budget(deadline: Deadline, timeout: float | None) -> float:
    """min(timeout, time left); StreamTimeoutError at 0, since a socket timeout of 0 means non-blocking."""
    left = deadline.remaining()
    if left <= 0:
        raise StreamTimeoutError("probe deadline passed")
    return left if timeout is None else min(timeout, left)
