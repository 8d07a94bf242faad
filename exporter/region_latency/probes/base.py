"""The one shape every probe has: given a target and a timeout, return a result. Probes never touch the tracker."""

from __future__ import annotations

import _thread
import errno
import functools
import ipaddress
import math
import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from region_latency.probes._detached import run_detached

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ErrorKind(StrEnum):
    """Why a probe failed; used as the `reason` label of failure counters (a bounded set)."""

    DNS = "dns"  # the endpoint's name did not resolve
    REFUSED = "refused"  # connection refused / reset during connect
    TIMEOUT = "timeout"  # the probe's deadline passed (connect, TLS or response)
    TLS = "tls"  # handshake or certificate failure
    HTTP = "http"  # the server answered, but not with a usable HTTP response (or a status the probe rejects)
    CREDENTIALS = "credentials"  # the api probe found no AWS credentials
    CONNECTION = "connection"  # the connection broke after it was established
    OTHER = "other"  # anything else; the detail says what
    # The address family the target asked for (`ip_version`) cannot be used from here: the name has no address of
    # it, or this host has no route or source address of it. Not counted as a failure of the region.
    FAMILY_UNAVAILABLE = "ip_family_unavailable"


FAMILY_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
"""Connect errors that say this host cannot use the address family at all (no route of the family, no source
address of it, the family disabled), as opposed to the region being unreachable (EHOSTUNREACH, timeouts)."""


class ProbeOptions(BaseModel):
    """The options of one probe kind: each kind declares a subclass, validated once when the configuration loads.

    Frozen, and strict about unknown keys. `parse` turns a mapping (a config file's `options:`) into the model,
    with a one-line ValueError naming the bad option.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    kind: ClassVar[str] = "probe"

    @classmethod
    def parse(cls, raw: ProbeOptions | Mapping[str, Any] | None) -> Self:
        """`raw` as this kind's options: an instance as it is, a mapping validated; ValueError (one line)."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, ProbeOptions):
            raise ValueError(f"{type(raw).__name__} are not {cls.kind} probe options")
        if raw is not None and not isinstance(raw, Mapping):
            raise ValueError(f"{cls.kind} probe options must be a mapping, not {raw!r}")
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise ValueError(cls._one_line(exc)) from None

    @classmethod
    def _one_line(cls, exc: ValidationError) -> str:
        errors = exc.errors(include_url=False)
        unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
        if unknown:
            return (f"unknown {cls.kind} probe option(s) {', '.join(map(repr, unknown))} "
                    f"(known: {', '.join(sorted(cls.model_fields))})")
        first = errors[0]
        if first["type"] == "value_error":
            return str(first["ctx"]["error"])
        where = ".".join(str(part) for part in first["loc"])
        return f"{cls.kind} option {where!r}: {first['msg']} (got {first.get('input')!r})"


@dataclass(frozen=True, slots=True)
class Target:
    """What to probe: a service in a region at an endpoint URL, with its kind's options.

    `options` is the kind's validated ProbeOptions model (what the configuration hands over: validated once);
    a plain mapping is accepted too, for targets built by hand, and validated by the probe on each call.
    """

    service: str
    region: str
    url: str
    options: ProbeOptions | Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One measurement. `latency` (seconds) is what feeds the tracker; None means the probe failed.

    `phases` holds the durations (seconds) of the parts the probe could time, named
    `dns`, `connect`, `tls`, `ttfb` (request sent -> first response byte) and `total`; `connect_timing` says
    which clock timed `connect` (a ConnectTiming value: the kernel's tcpi_rtt, or this process's stamps).
    `address` (the IP connected to) and `tls_version` (as `ssl` names it) are what the probe learnt on the way,
    when it learnt it: the status page's debug view shows them.
    """

    latency: float | None
    phases: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    error: ErrorKind | None = None
    detail: str = ""
    status: int | None = None
    address: str | None = None
    tls_version: str | None = None
    connect_timing: str | None = None  # ConnectTiming of phases["connect"], when there is one

    @property
    def ok(self) -> bool:
        return self.latency is not None

    @classmethod
    def failure(
        cls, error: ErrorKind, detail: str, phases: Mapping[str, float] | None = None, status: int | None = None,
        address: str | None = None,
    ) -> ProbeResult:
        return cls(latency=None, phases=MappingProxyType(dict(phases or {})), error=error, detail=detail,
                   status=status, address=address)


ProbeFn = Callable[[Target, float], ProbeResult]
"""A probe: `probe(target, timeout_seconds) -> ProbeResult`. It must return within the timeout
(plus scheduling slack) and never raise for network trouble: failures are results."""


# -- helpers shared by the probe modules ------------------------------------------------------------

MAX_DETAIL = 200
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"https": 443, "http": 80})


def check_timeout(timeout: object) -> float:
    """A probe timeout must be a positive finite number of seconds (bad config fails loudly, early)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout must be a number of seconds, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout!r}")
    return float(timeout)


class Deadline:
    """A probe's whole time budget on the perf_counter clock: every phase gets only what is left of it.

    Per-operation socket timeouts alone would let DNS + connect + TLS + response each take the full
    timeout; a shared deadline bounds the sum.
    """

    __slots__ = ("at", "started", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = check_timeout(timeout)
        self.started = time.perf_counter()
        self.at = self.started + self.timeout

    def remaining(self) -> float:
        """Seconds left (0.0 once expired, never negative)."""
        return max(0.0, self.at - time.perf_counter())

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def expired(self) -> bool:
        return time.perf_counter() >= self.at


class ProbeError(Exception):
    """Raised inside a probe to end it with a failure result; the probe catches it, callers never see it."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = short_detail(detail)


def short_detail(text: object, limit: int = MAX_DETAIL) -> str:
    """One line, at most `limit` characters: details end up in logs and status pages."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception, short."""
    message = str(exc)
    return short_detail(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The parts of a target URL a socket needs."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, "/" when the URL has none

    @property
    def host_is_ip(self) -> bool:
        return is_ip_address(self.host)

    def host_header(self) -> str:
        """The Host header value: the name, plus the port when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS.get(self.scheme)
        return host if self.port == default else f"{host}:{self.port}"


def parse_endpoint(url: str, port: object = None) -> Endpoint:
    """Split `scheme://host[:port][/path]` (or bare `host:port`); ValueError says what is wrong.

    `port` (e.g. from Target.options) overrides the URL's port. Answers are cached: every probe of a target asks
    for the same URL and port, every round.
    """
    if isinstance(url, str) and (port is None or type(port) is int):
        return _parse_endpoint_cached(url, port)
    return _parse_endpoint(url, port)


@functools.lru_cache(maxsize=8192)
def _parse_endpoint_cached(url: str, port: int | None) -> Endpoint:
    return _parse_endpoint(url, port)


def _parse_endpoint(url: object, port: object) -> Endpoint:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"endpoint URL must be a non-empty string, got {url!r}")
    parsed = urlsplit(url if "://" in url else f"tcp://{url}")
    scheme = parsed.scheme.lower()
    try:
        url_port = parsed.port
    except ValueError:
        raise ValueError(f"endpoint URL {url!r} has an invalid port") from None
    host = parsed.hostname
    if not host:
        raise ValueError(f"endpoint URL {url!r} has no host")
    chosen = url_port if port is None else check_port(port)
    if chosen is None:
        chosen = DEFAULT_PORTS.get(scheme)
    if chosen is None:
        raise ValueError(f"endpoint URL {url!r} needs a port (no default port for scheme {scheme!r})")
    path = parsed.path or "/"
    if parsed.query:
        path = f"{path}?{parsed.query}"
    return Endpoint(scheme=scheme, host=host, port=chosen, path=path)


def check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not (0 < port < 65536):
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return port


def is_ip_address(host: str) -> bool:
    return ip_version_of(host) is not None


@functools.lru_cache(maxsize=4096)
def ip_version_of(host: str) -> int | None:
    """4 or 6 for an IP address literal, None for a name (cached: probes ask it for the same hosts every round)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def check_ip_version(value: object) -> int | None:
    """Target.options["ip_version"]: 4, 6, or None (any family, in the resolver's order)."""
    if value is None or value in ("any", ""):
        return None
    if value in (4, "4", "ipv4"):
        return 4
    if value in (6, "6", "ipv6"):
        return 6
    raise ValueError(f"ip_version must be 4, 6 or None, got {value!r}")


def _ip_version(value: object) -> int | None:
    return check_ip_version(value)


def _port(value: object) -> int | None:
    return None if value is None else check_port(value)


IpVersion = Annotated[int | None, BeforeValidator(_ip_version)]
"""An `ip_version` option: 4, 6 or None (also "ipv4", "4", "any", ...)."""
Port = Annotated[int | None, BeforeValidator(_port)]
"""A `port` option overriding the URL's: 1..65535 or None."""


class TlsOptions(ProbeOptions):
    """The certificate rules of every kind that speaks TLS (https, api), written once: at most one of
    `verify` (True, False, a CA bundle path or, in code, an SSLContext), `ca_file` (a CA bundle path) and
    `insecure` (True: no verification)."""

    verify: bool | str | ssl.SSLContext | None = None
    ca_file: str | None = None
    insecure: bool = False

    @model_validator(mode="before")
    @classmethod
    def _types(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        verify, ca_file, insecure = data.get("verify"), data.get("ca_file"), data.get("insecure", False)
        given = [key for key in ("verify", "ca_file", "insecure") if data.get(key) not in (None, False)]
        if verify is False:
            given.append("verify")
        if len(given) > 1:
            raise ValueError(f"give only one of the {cls.kind} options 'verify', 'ca_file', 'insecure' "
                             f"(got {given})")
        if verify is not None and not isinstance(verify, bool | str | ssl.SSLContext):
            raise ValueError(f"{cls.kind} option 'verify' must be a bool, a CA bundle path or an SSLContext, "
                             f"got {verify!r}")
        if not isinstance(insecure, bool):
            raise ValueError(f"{cls.kind} option 'insecure' must be true or false, got {insecure!r}")
        if ca_file is not None and not isinstance(ca_file, str):
            raise ValueError(f"{cls.kind} option 'ca_file' must be a path, got {ca_file!r}")
        return data

    @property
    def verifies(self) -> bool:
        """False when certificate verification is off (`insecure: true` or `verify: false`)."""
        return not (self.insecure or self.verify is False)

    @property
    def ca_bundle(self) -> str | None:
        """The CA bundle path to trust instead of the default one, if any."""
        if self.ca_file is not None:
            return self.ca_file
        return self.verify if isinstance(self.verify, str) else None


@dataclass(frozen=True, slots=True)
class AddressLookup:
    """The address to connect to, and how long the DNS lookup took (None: the host was an IP literal)."""

    address: str
    family: socket.AddressFamily
    seconds: float | None


def lookup_address(host: str, port: int, deadline: Deadline, ip_version: int | None = None) -> AddressLookup:
    """Look `host` up in DNS within the deadline, timing only the resolver call itself.

    getaddrinfo cannot be interrupted, so it runs on a daemon thread (reused: probes/_detached.py) that the
    probe stops waiting for at the deadline. The first address in the resolver's order (RFC 6724, as an SDK
    would connect) of the wanted family wins. Failures raise ProbeError(DNS); when a family was asked for and the
    name has addresses of the other family only (or the host is an address of the other family), ProbeError(
    FAMILY_UNAVAILABLE).
    """
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(ip_version or 0, socket.AF_UNSPEC)
    literal = ip_version_of(host)
    if literal is not None:
        if ip_version is not None and literal != ip_version:
            raise ProbeError(ErrorKind.FAMILY_UNAVAILABLE, f"{host} is not an IPv{ip_version} address")
        return AddressLookup(host, socket.AF_INET6 if literal == 6 else socket.AF_INET, None)
    outcome: dict[str, Any] = {}
    done = _thread.allocate_lock()  # held until the lookup is done: a bare lock is the cheapest hand-back
    done.acquire()

    def lookup() -> None:
        started = time.perf_counter()
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.perf_counter() - started
        if family != socket.AF_UNSPEC and not outcome.get("infos"):  # any address at all? (not timed)
            try:
                outcome["other_family"] = bool(socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM))
            except (OSError, UnicodeError):
                outcome["other_family"] = False
        done.release()

    run_detached(lookup)
    if not done.acquire(timeout=max(deadline.remaining(), 0.0)):
        raise ProbeError(ErrorKind.DNS, f"resolving {host} did not finish within {deadline.timeout:g}s")
    if outcome.get("other_family"):
        raise ProbeError(ErrorKind.FAMILY_UNAVAILABLE, f"{host} has no IPv{ip_version} address (only the other "
                                                       f"family's)")
    if "error" in outcome:
        raise ProbeError(ErrorKind.DNS, f"cannot resolve {host}: {_gai_message(outcome['error'])}")
    infos = outcome["infos"]
    if not infos:
        raise ProbeError(ErrorKind.DNS, f"{host} has no {f'IPv{ip_version} ' if ip_version else ''}address")
    fam, _, _, _, sockaddr = infos[0]
    return AddressLookup(str(sockaddr[0]), fam, outcome["seconds"])


def _gai_message(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror) and len(exc.args) > 1:
        return str(exc.args[1])
    return describe(exc)


_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY})


class ConnectTiming(StrEnum):
    """Which clock timed a `connect` phase (ProbeResult.connect_timing, /regions `connect_timing`)."""

    KERNEL = "kernel"  # the kernel's own SYN -> SYN-ACK round trip: TCP_INFO tcpi_rtt
    STAMPS = "stamps"  # perf_counter stamps of this process around the handshake (`timed_connect`)


# struct tcp_info (include/uapi/linux/tcp.h): eight u8 fields, then u32s. tcpi_retransmits is the u8 at offset 2,
# tcpi_rtt (microseconds) the u32 at 68 (8 + 15 * 4), tcpi_total_retrans the u32 at 100 (8 + 23 * 4). Asking for
# 104 bytes reads up to tcpi_total_retrans; every Linux since 2.6 fills at least that much.
_TCPI_RETRANSMITS = 2
_TCPI_RTT = 68
_TCPI_TOTAL_RETRANS = 100
_TCP_INFO_LENGTH = 104
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)  # Linux only


def kernel_rtt(sock: socket.socket) -> float | None:
    """The round trip (seconds) the kernel measured for the handshake of a just-connected TCP socket, or None.

    Linux times SYN -> SYN-ACK itself, from the SYN's transmit stamp to the SYN-ACK's arrival in softirq, and
    reports it as TCP_INFO's `tcpi_rtt` (microseconds; right after the handshake it is that one sample). No
    wake-up of this process is in it. None where there is no TCP_INFO (not Linux), when the SYN was
    retransmitted (Karn's rule: the kernel takes no sample from it, or only a coarse timestamp-option one) and
    when there is no sample at all (tcpi_rtt 0). Read it before any data moves: later ACKs smooth it.
    """
    if _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LENGTH)
    except OSError:
        return None
    return tcp_info_rtt(raw)


def tcp_info_rtt(raw: bytes) -> float | None:
    """tcpi_rtt (seconds) of a struct tcp_info as getsockopt returned it; None when short, 0, or retransmitted."""
    if len(raw) < _TCP_INFO_LENGTH:
        return None
    (rtt_us,) = struct.unpack_from("=I", raw, _TCPI_RTT)
    (total_retrans,) = struct.unpack_from("=I", raw, _TCPI_TOTAL_RETRANS)
    if rtt_us == 0 or raw[_TCPI_RETRANSMITS] or total_retrans:
        return None
    return float(rtt_us) / 1e6


@dataclass(frozen=True, slots=True)
class ConnectSpan:
    """One timed TCP handshake: this process's stamps around it, and the kernel's own round trip if it had one."""

    started: float  # perf_counter: SYN handed to the kernel
    ended: float  # perf_counter: the wake-up at which the handshake completed
    kernel: float | None  # seconds, `kernel_rtt`

    @property
    def stamped(self) -> float:
        return self.ended - self.started

    @property
    def seconds(self) -> float:
        """The connect phase: the kernel's round trip where there is one, else the stamps."""
        return self.stamped if self.kernel is None else self.kernel

    @property
    def timing(self) -> ConnectTiming:
        return ConnectTiming.STAMPS if self.kernel is None else ConnectTiming.KERNEL


def timed_connect(sock: socket.socket, address: Any, budget: float) -> ConnectSpan:
    """Connect `sock` (its options already set) to `address` within `budget` seconds; the handshake's span on
    the wire: (SYN handed to the kernel, the wake-up at which the handshake completed), and the kernel's own
    measure of it (`kernel_rtt`), which `ConnectSpan.seconds` prefers.

    A non-blocking connect and a poll of our own. CPython's connect with a timeout does the same inside, but a
    stamp around it also holds the socket call's way in and, after the wake-up, SO_ERROR and the way back to
    Python; these stamps sit at the two kernel events (bench/BENCHMARKS.md, accuracy). What they still hold is
    this process's wake-up after the SYN-ACK; tcpi_rtt holds none of it. TimeoutError when the budget runs out;
    the kernel's OSError (ConnectionRefusedError, ...) when the connect fails.
    """
    sock.setblocking(False)
    started = time.perf_counter()
    code = sock.connect_ex(address)
    sent = time.perf_counter()
    if code == 0:  # done at once (it happens on loopback): no wake-up to stamp
        return ConnectSpan(started, sent, kernel_rtt(sock))
    if code not in _IN_PROGRESS:
        raise OSError(code, os.strerror(code))
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(max(0, math.ceil((budget - (sent - started)) * 1000))):
        raise TimeoutError(f"connect did not finish within {budget:.3g}s")
    arrived = time.perf_counter()
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))
    return ConnectSpan(sent, arrived, kernel_rtt(sock))
