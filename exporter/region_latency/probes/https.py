"""The `https` probe: one real HTTP(S) request on a fresh connection, every phase timed at the socket.

Phases: `dns` (resolved here, before connecting), `connect` (TCP handshake to the resolved address),
`tls` (TLS handshake), `ttfb` (request handed to the kernel -> the response's first bytes arrived) and
`total` (probe start -> response body read, body capped at 64 KiB). Phases are stamped around the
socket calls themselves (SocketStamps); httpcore's trace events name the step a failure happened in.

The latency that feeds the tracker is `ttfb`: on an established connection it is one request round
trip plus the server's think time, which is what a pooled SDK client (boto3 keeps connections alive)
pays on every call. `connect` and `tls` are paid once per connection and are exported as phases.

The request goes through httpcore (the engine under httpx), on a network
backend that clamps every socket operation to what is left of the probe's deadline: httpx's own
timeouts are per operation, so a server that trickles bytes or accepts and never answers could
otherwise hold a probe for several timeouts. The backend makes its own sockets (TCP_NODELAY set before
connecting) and runs its own TLS handshake loop, so `connect` covers the kernel connect alone and `tls` the
handshake's network part (ClientHello sent -> the server's flight received), not the client's own TLS CPU.

Options (`HttpsOptions`, validated once when the configuration loads):
  path         request path and query (default: the URL's path, else "/")
  method       HTTP method (default "GET")
  headers      extra request headers (mapping)
  port         overrides the URL's port
  ip_version   4, 6 or None (default: the resolver's first address)
  ca_file      path to a PEM CA bundle to trust instead of the default (certifi) bundle
  verify       True (default), False (no verification), a CA bundle path, or an ssl.SSLContext
  insecure     True disables certificate verification (default False)
Any HTTP status counts as reachable; the status is recorded in ProbeResult.status.
"""

from __future__ import annotations

import functools
import math
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import certifi
import httpcore
from pydantic import PrivateAttr, field_validator, model_validator

from region_latency._version import __version__
from region_latency.probes.base import (
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
_TIMEOUT_ERRORS = (httpcore.TimeoutException,)


class HttpsOptions(TlsOptions):
    """The https probe's options, validated once (a CA bundle is loaded then, not per probe)."""

    kind: ClassVar[str] = "https"
    path: str | None = None  # request path and query; None: the URL's
    method: str = "GET"
    headers: dict[str, str] = {}
    port: Port = None
    ip_version: IpVersion = None

    _ssl_context: ssl.SSLContext | None = PrivateAttr(default=None)

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

    @model_validator(mode="after")
    def _context(self) -> HttpsOptions:
        self._ssl_context = tls_context(self)
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
        return _request(endpoint, found.address, options, deadline, phases)
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
    return ssl.create_default_context(cafile=certifi.where())


@functools.lru_cache(maxsize=1)
def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class PhaseTrace:
    """The httpcore `trace` callback: a perf_counter stamp per event, and the step in progress."""

    def __init__(self) -> None:
        self.stamps: dict[str, float] = {}
        self.started = "connect_tcp"  # the last step that started
        self.failed: str | None = None  # the first step that failed (httpcore emits `<step>.failed`)

    def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        now = time.perf_counter()
        name = event.rsplit(".", 2)
        step, state = (name[-2], name[-1]) if len(name) >= 2 else (event, "")
        self.stamps[f"{step}.{state}"] = now
        if state == "started":
            self.started = step
        elif state == "failed" and self.failed is None:
            self.failed = step

    @property
    def step(self) -> str:
        """The step a failure happened in (names the phase in error details)."""
        return self.failed or self.started

    def span(self, start: str, end: str) -> float | None:
        if start in self.stamps and end in self.stamps:
            return self.stamps[end] - self.stamps[start]
        return None

    def phases(self) -> dict[str, float]:
        spans = {
            "connect": self.span("connect_tcp.started", "connect_tcp.complete"),
            "tls": self.span("start_tls.started", "start_tls.complete"),
            "ttfb": self.span("send_request_headers.started", "receive_response_headers.complete"),
        }
        return {name: value for name, value in spans.items() if value is not None}


def _request(
    endpoint: Endpoint, address: str, options: HttpsOptions, deadline: Deadline, phases: dict[str, float]
) -> ProbeResult:
    """Send the request to `address` (Host header and SNI keep the endpoint's name) and time it."""
    trace = PhaseTrace()
    backend = DeadlineBackend(deadline)
    context = None
    if endpoint.scheme == "https":
        context = options.ssl_context or _default_context()
    connection = httpcore.HTTPConnection(
        origin=httpcore.Origin(endpoint.scheme.encode(), address.encode(), endpoint.port),
        ssl_context=context,
        network_backend=backend,
        retries=0,
    )
    url = httpcore.URL(
        scheme=endpoint.scheme, host=address, port=endpoint.port, target=options.path or endpoint.path
    )
    extensions: dict[str, Any] = {"trace": trace, "timeout": _timeouts(deadline)}
    if endpoint.scheme == "https" and not endpoint.host_is_ip:
        extensions["sni_hostname"] = endpoint.host
    headers: dict[bytes | str, bytes | str] = {"Host": endpoint.host_header(), "User-Agent": USER_AGENT,
                                               "Accept": "*/*"}
    headers.update(options.headers)
    try:
        with connection, connection.stream(options.method, url, headers=headers, extensions=extensions) as resp:
            _read_some(resp)
            status = resp.status
    except httpcore.TimeoutException:
        phases.update(trace.phases())
        raise ProbeError(ErrorKind.TIMEOUT, _timeout_detail(trace.step, deadline)) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        phases.update(trace.phases())
        raise ProbeError(*_classify(exc, trace.step, deadline)) from None
    phases.update(trace.phases())
    phases.update(backend.stamps.phases())  # the socket stamps win where both exist
    phases["total"] = deadline.elapsed()
    if "ttfb" not in phases:  # cannot happen with HTTP/1.1; guard rather than report a made-up number
        raise ProbeError(ErrorKind.OTHER, "response arrived but the trace recorded no request timing")
    return ProbeResult(latency=phases["ttfb"], phases=MappingProxyType(phases), status=status, address=address,
                       tls_version=backend.stamps.tls_version)


def _read_some(response: httpcore.Response) -> None:
    """Read up to MAX_BODY bytes of the body, so `total` covers a small response's transfer."""
    received = 0
    for chunk in response.iter_stream():
        received += len(chunk)
        if received >= MAX_BODY:
            break


def _timeouts(deadline: Deadline) -> dict[str, float]:
    budget = deadline.remaining()
    return {"connect": budget, "read": budget, "write": budget, "pool": budget}


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


def _classify(exc: BaseException, step: str, deadline: Deadline) -> tuple[ErrorKind, str]:
    """Map an httpcore/socket failure to an ErrorKind, using the cause and the step it happened in."""
    cause = exc.__cause__ or exc.__context__ or exc
    where = _STEP_NAMES.get(step, step)
    if isinstance(cause, TimeoutError) or deadline.expired:
        return ErrorKind.TIMEOUT, _timeout_detail(step, deadline)
    if isinstance(cause, ssl.SSLError) or step == "start_tls":
        return ErrorKind.TLS, f"TLS handshake failed: {_ssl_reason(cause)}"
    if step == "connect_tcp":
        if isinstance(cause, ConnectionRefusedError | ConnectionResetError):
            return ErrorKind.REFUSED, f"{where}: {describe(cause)}"
        return ErrorKind.CONNECTION, f"{where}: {describe(cause)}"
    if isinstance(exc, httpcore.RemoteProtocolError) and "disconnected" not in str(exc).lower():
        return ErrorKind.HTTP, f"not a valid HTTP response: {describe(exc)}"
    return ErrorKind.CONNECTION, f"{where}: {describe(cause)}"


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return describe(exc)


class SocketStamps:
    """perf_counter stamps taken right at the socket calls, tighter than httpcore's trace events.

    The trace events also time httpcore's own work (h11 request encoding, response header parsing,
    event dispatch); stamping the socket calls keeps that Python overhead out of the phases, as
    blackbox_exporter's httptrace hooks do. See bench/BENCHMARKS.md (accuracy).
    """

    def __init__(self) -> None:
        self.connect: tuple[float, float] | None = None
        self.tls: tuple[float, float] | None = None
        self.first_write: float | None = None
        self.first_read: float | None = None
        self.tls_version: str | None = None  # what the handshake negotiated ("TLSv1.3")

    def phases(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.connect is not None:
            out["connect"] = self.connect[1] - self.connect[0]
        if self.tls is not None:
            out["tls"] = self.tls[1] - self.tls[0]
        if self.first_write is not None and self.first_read is not None:
            out["ttfb"] = self.first_read - self.first_write
        return out


class DeadlineBackend(httpcore.NetworkBackend):
    """A sync network backend whose every socket operation gets only what is left of the probe's deadline.

    It makes its own sockets (rather than httpcore's SyncBackend, whose `socket.create_connection` also runs
    getaddrinfo and the socket set-up inside the connect) so that the `connect` stamp covers the kernel's
    connect alone, SYN -> SYN-ACK, and its own TLS handshake loop so that the `tls` stamp covers the
    handshake's network part alone and every wait in it is bounded by the deadline.
    """

    def __init__(self, deadline: Deadline, stamps: SocketStamps | None = None) -> None:
        self._deadline = deadline
        self.stamps = stamps or SocketStamps()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        """Connect to `host` (an IP address: the probe resolves names itself, as its own `dns` phase).

        Socket, TCP_NODELAY, options and source address are set up first; the stamp covers only the
        handshake on the wire: SYN handed to the kernel -> the wake-up at which it completed (`timed_connect`).
        """
        budget = _budget(self._deadline, timeout, httpcore.ConnectTimeout)
        try:  # numeric only: a name here would be a DNS lookup hidden in `connect` and outside the deadline
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"not an IP address: {host!r} ({describe(exc)})") from exc
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # before the first byte: no Nagle delay
            for option in socket_options or ():
                sock.setsockopt(*option)
            if local_address is not None:
                sock.bind((local_address, 0))
            started, ended = timed_connect(sock, sockaddr, budget)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(f"connect did not finish within {budget:.3g}s") from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(describe(exc)) from exc
        self.stamps.connect = (started, ended)
        return DeadlineStream(sock, self._deadline, self.stamps)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._deadline.remaining()))


class DeadlineStream(httpcore.NetworkStream):
    """A socket (plain, then TLS) whose reads, writes and TLS handshake never outlive the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, stamps: SocketStamps) -> None:
        self._sock = sock
        self._deadline = deadline
        self._stamps = stamps

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _budget(self._deadline, timeout, httpcore.ReadTimeout)
        if self._stamps.first_read is None and self._stamps.first_write is not None:
            return self._first_response_read(max_bytes, budget)
        try:
            self._sock.settimeout(budget)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(describe(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(describe(exc)) from exc

    def _first_response_read(self, max_bytes: int, budget: float) -> bytes:
        """The read that ends `ttfb`, in a loop of our own so that the stamp is the wake-up at which the response's
        first bytes arrived, not the return of `recv()`: the TLS session tickets that arrive first and the
        record decryption are the client's CPU (about 0.1 ms with OpenSSL), not the round trip."""
        sock = self._sock
        sock.setblocking(False)
        try:
            data, _, arrived = _run_waiting(lambda: sock.recv(max_bytes), sock, time.perf_counter() + budget,
                                            httpcore.ReadTimeout, "no response before the deadline")
        except OSError as exc:
            raise httpcore.ReadError(describe(exc)) from exc
        if data:
            self._stamps.first_read = time.perf_counter() if arrived is None else arrived
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        view = memoryview(buffer)
        try:
            while view:
                self._sock.settimeout(_budget(self._deadline, timeout, httpcore.WriteTimeout))
                view = view[self._sock.send(view):]
                if self._stamps.first_write is None:  # the request's first bytes are the kernel's now
                    self._stamps.first_write = time.perf_counter()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(describe(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(describe(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        """Wrap the socket, then drive `do_handshake()` non-blocking, each wait bounded by the deadline.

        The `tls` stamp spans the handshake's network part: ClientHello handed to the kernel -> the server's
        last handshake flight arrived (see `_handshake`); neither the SSLSocket's construction nor the client's
        own handshake CPU is in it.
        """
        budget = _budget(self._deadline, timeout, httpcore.ConnectTimeout)
        if isinstance(self._sock, ssl.SSLSocket):  # TLS in TLS (HTTPS proxies): never asked by this probe
            raise httpcore.ConnectError("TLS over TLS is not supported")
        until = time.perf_counter() + budget
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self._sock.close()
            raise httpcore.ConnectError(describe(exc)) from exc
        try:
            self._stamps.tls = _handshake(tls, until)
            self._stamps.tls_version = tls.version()
        except BaseException:
            tls.close()
            raise
        return DeadlineStream(tls, self._deadline, self._stamps)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":  # httpcore asks it for the ALPN protocol; SSLSocket answers like SSLObject
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


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
        _, sent, arrived = _run_waiting(tls.do_handshake, tls, until, httpcore.ConnectTimeout,
                                        "TLS handshake did not finish before the deadline")
    except OSError as exc:  # ssl.SSLError is an OSError
        raise httpcore.ConnectError(describe(exc)) from exc
    done = time.perf_counter()
    return (started if sent is None else sent), (done if arrived is None else arrived)


_T = TypeVar("_T")


def _run_waiting(call: Callable[[], _T], sock: socket.socket, until: float, timeout: type[Exception],
                 message: str) -> tuple[_T, float | None, float | None]:
    """Call `call` (an operation on the non-blocking `sock`) until it completes, polling for what it waits for
    and never past `until` (perf_counter; then `timeout(message)`). Returns its result, when it first had to
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
            raise timeout(message)
        poller.modify(sock, events)
        if not poller.poll(math.ceil(left * 1000)):
            raise timeout(message)
        if events == select.POLLIN:
            last_wake = time.perf_counter()


def _budget(deadline: Deadline, timeout: float | None, expired: type[Exception]) -> float:
    """min(timeout, time left); raises `expired` at 0, since a socket timeout of 0 means non-blocking."""
    left = deadline.remaining()
    if left <= 0:
        raise expired("probe deadline passed")
    return left if timeout is None else min(timeout, left)
