"""The one shape every probe has: given a target and a timeout, return a result. Probes never touch the tracker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Target:
    """What to probe: a service in a region at an endpoint URL, with per-kind options."""

    service: str
    region: str
    url: str
    options: Mapping[str, Any] = field(default=_EMPTY)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One measurement. `latency` (seconds) is what feeds the tracker; None means the probe failed.

    `phases` holds the durations (seconds) of the parts the probe could time, named
    `dns`, `connect`, `tls`, `ttfb` (request sent -> first response byte) and `total`.
    """

    latency: float | None
    phases: Mapping[str, float] = field(default=_EMPTY)
    error: ErrorKind | None = None
    detail: str = ""
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.latency is not None

    @classmethod
    def failure(
        cls, error: ErrorKind, detail: str, phases: Mapping[str, float] | None = None, status: int | None = None
    ) -> ProbeResult:
        return cls(latency=None, phases=MappingProxyType(dict(phases or {})), error=error, detail=detail,
                   status=status)


ProbeFn = Callable[[Target, float], ProbeResult]
"""A probe: `probe(target, timeout_seconds) -> ProbeResult`. It must return within the timeout
(plus scheduling slack) and never raise for network trouble: failures are results."""
