"""Probe kinds behind one signature (`ProbeFn`), looked up by name.

Modules are imported on first use: the `api` probe pulls in boto3, which the others do not need.
"""

from __future__ import annotations

import importlib

from region_latency.probes.base import ErrorKind, ProbeFn, ProbeResult, Target

PROBE_KINDS: dict[str, str] = {
    "tcp": "region_latency.probes.tcp",
    "https": "region_latency.probes.https",
    "api": "region_latency.probes.api",
}


def get_probe(kind: str) -> ProbeFn:
    """The probe function of `kind` (one of PROBE_KINDS); ValueError for an unknown kind."""
    try:
        module_name = PROBE_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(PROBE_KINDS))
        raise ValueError(f"unknown probe kind {kind!r} (known: {known})") from None
    return importlib.import_module(module_name).probe


def check_target(kind: str, target: Target) -> None:
    """Validate a target's URL and options for `kind` before any probe runs (config time).

    ValueError names the bad option, so a typo fails `check-config` and start-up instead of
    turning every probe into an `other` failure.
    """
    get_probe(kind)  # unknown kind -> ValueError
    module = importlib.import_module(PROBE_KINDS[kind])
    allowed = module.OPTIONS
    unknown = sorted(set(target.options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {kind} probe option(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(sorted(allowed))})")
    module.check_target(target)


__all__ = ["PROBE_KINDS", "ErrorKind", "ProbeFn", "ProbeResult", "Target", "check_target", "get_probe"]
