"""Probe kinds behind one signature (`ProbeFn`), in one static table: kind name -> `ProbeKind`.

Like blackbox_exporter's `Probers` map. Each kind is one module that declares its options model (a
`ProbeOptions` subclass), a `check_target` (config-time checks of a target's URL and options) and its `probe`.
The `api` module imports boto3 and botocore only when a probe runs, so a process without api targets never
loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from region_latency.probes import api, https, tcp
from region_latency.probes.base import ErrorKind, ProbeFn, ProbeOptions, ProbeResult, Target


@dataclass(frozen=True, slots=True)
class ProbeKind:
    """What a probe kind provides: its options model, its config-time target check and its probe function."""

    name: str
    options_model: type[ProbeOptions]
    check_target: Callable[[Target], None]  # ValueError for a URL or options this kind would refuse
    probe: ProbeFn

    def options(self, raw: ProbeOptions | Mapping[str, Any] | None) -> ProbeOptions:
        """`raw` (a config file's `options:`) validated into this kind's model; ValueError, one line."""
        return self.options_model.parse(raw)

    def target(self, service: str, region: str, url: str,
               options: ProbeOptions | Mapping[str, Any] | None = None) -> Target:
        """A checked Target with typed options, ready for `probe`; ValueError for bad options or URL."""
        target = Target(service=service, region=region, url=url, options=self.options(options))
        self.check_target(target)
        return target


PROBE_KINDS: Mapping[str, ProbeKind] = MappingProxyType({
    "tcp": ProbeKind("tcp", tcp.TcpOptions, tcp.check_target, tcp.probe),
    "https": ProbeKind("https", https.HttpsOptions, https.check_target, https.probe),
    "api": ProbeKind("api", api.ApiOptions, api.check_target, api.probe),
})


def probe_kind(kind: str) -> ProbeKind:
    """The registered kind `kind`; ValueError naming the known ones."""
    try:
        return PROBE_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(PROBE_KINDS))
        raise ValueError(f"unknown probe kind {kind!r} (known: {known})") from None


def get_probe(kind: str) -> ProbeFn:
    """The probe function of `kind` (one of PROBE_KINDS); ValueError for an unknown kind."""
    return probe_kind(kind).probe


def check_target(kind: str, target: Target) -> None:
    """Validate a target's URL and options for `kind` before any probe runs (config time).

    ValueError names the bad option, so a typo fails `check-config` and start-up instead of
    turning every probe into an `other` failure.
    """
    probe_kind(kind).check_target(target)


__all__ = [
    "PROBE_KINDS",
    "ErrorKind",
    "ProbeFn",
    "ProbeKind",
    "ProbeOptions",
    "ProbeResult",
    "Target",
    "check_target",
    "get_probe",
    "probe_kind",
]
