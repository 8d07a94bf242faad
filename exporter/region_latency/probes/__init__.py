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


__all__ = ["PROBE_KINDS", "ErrorKind", "ProbeFn", "ProbeResult", "Target", "get_probe"]
