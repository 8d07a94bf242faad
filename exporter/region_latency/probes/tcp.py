"""The `tcp` probe: how long a TCP handshake to the endpoint takes (one network round trip).

DNS is resolved and timed first (phase `dns`) and kept out of the latency, which is the connect
time alone (phase `connect`: SYN handed to the kernel -> the wake-up at which the handshake completed,
`base.timed_connect`). Nothing is sent: the socket is closed right after the handshake.

Options (`TcpOptions`): `port` (overrides the URL's port), `ip_version` (4, 6 or None).
"""

from __future__ import annotations

import errno
import socket
from types import MappingProxyType
from typing import ClassVar

from region_latency.probes.base import (
    Deadline,
    ErrorKind,
    IpVersion,
    Port,
    ProbeError,
    ProbeOptions,
    ProbeResult,
    Target,
    describe,
    lookup_address,
    parse_endpoint,
    timed_connect,
)

_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET})


class TcpOptions(ProbeOptions):
    """The tcp probe's options."""

    kind: ClassVar[str] = "tcp"
    port: Port = None  # overrides the URL's port
    ip_version: IpVersion = None  # 4, 6 or None (the resolver's first address)


def check_target(target: Target) -> None:
    """ValueError for a bad URL or options (what `probe` would refuse at run time)."""
    parse_endpoint(target.url, TcpOptions.parse(target.options).port)


def probe(target: Target, timeout: float) -> ProbeResult:
    """Look the host up, then time one TCP connect to the target's host and port, all within `timeout`."""
    deadline = Deadline(timeout)
    options = TcpOptions.parse(target.options)
    endpoint = parse_endpoint(target.url, options.port)
    phases: dict[str, float] = {}
    address: str | None = None
    try:
        found = lookup_address(endpoint.host, endpoint.port, deadline, options.ip_version)
        address = found.address
        if found.seconds is not None:
            phases["dns"] = found.seconds
        phases["connect"] = connect_time(found.family, found.address, endpoint.port, deadline)
    except ProbeError as exc:
        return ProbeResult.failure(exc.kind, exc.detail, phases, address=address)
    phases["total"] = deadline.elapsed()
    return ProbeResult(latency=phases["connect"], phases=MappingProxyType(phases), address=address)


def connect_time(family: socket.AddressFamily, address: str, port: int, deadline: Deadline) -> float:
    """Seconds one TCP handshake to (address, port) takes; ProbeError when it fails or runs out of time."""
    budget = deadline.remaining()
    if budget <= 0:
        raise ProbeError(ErrorKind.TIMEOUT, f"no time left to connect to {address}:{port}")
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sent, arrived = timed_connect(sock, (address, port), budget)
        except TimeoutError:
            raise ProbeError(
                ErrorKind.TIMEOUT, f"connect to {address}:{port} timed out after {deadline.timeout:g}s"
            ) from None
        except OSError as exc:
            raise ProbeError(connect_error_kind(exc), f"connect to {address}:{port}: {describe(exc)}") from None
        return arrived - sent


def connect_error_kind(exc: OSError) -> ErrorKind:
    """Refused (or reset while connecting) is `refused`; unreachable networks and the rest are `connection`."""
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError) or exc.errno in _REFUSED_ERRNOS:
        return ErrorKind.REFUSED
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    return ErrorKind.CONNECTION
