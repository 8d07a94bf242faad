"""The tracker's cache document (the design plan's format) and its one validation, shared by every backend.

    {"metrics": {region: ema_seconds}, "counts": {region: samples},
     "updated_at": epoch_seconds, "last_sample_at": {region: epoch_seconds}}

stored under the key `region_latencies`. `last_sample_at` is ours (older readers ignore it); a region
without it takes `updated_at`. Decoding never raises: a region with a bad value is dropped and named in
`problems`, the good ones load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CACHE_KEY = "region_latencies"
MAX_LATENCY_SECONDS = 1e9
"""The largest EMA (and sample) accepted, about 31 years: a bound that keeps absurd numbers (1e308, 400-digit
integers) out, far above any round trip (the tracker's `update_latency` refuses larger samples too)."""
MAX_SAMPLES = 2**53
"""The largest sample count accepted (exact as a float, so /metrics shows it exactly)."""
MAX_REGIONS = 10_000
"""Regions read from one document; the rest are dropped as a problem."""
MAX_TIMESTAMP = 1e11
"""Timestamps are epoch seconds in [0, 1e11] (year 5138): anything else is damage."""
FIELDS = frozenset({"metrics", "counts", "updated_at", "last_sample_at"})
MAX_PROBLEMS = 20
"""Problems listed one by one; beyond it they are counted."""


@dataclass(frozen=True, slots=True)
class CachedRegion:
    """One region's persisted state: what survives a restart."""

    ema: float
    samples: int
    last_sample_at: float | None


@dataclass(slots=True)
class DecodedDocument:
    """The regions a document held that passed validation, and one line per thing dropped."""

    regions: dict[str, CachedRegion] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dropped: int = 0
    """Problems found beyond the MAX_PROBLEMS listed."""

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.dropped += 1

    def summary(self) -> str:
        """All problems on one line (for the copy kept aside)."""
        more = f"; and {self.dropped} more" if self.dropped else ""
        return "; ".join(self.problems) + more


def encode_document(regions: Mapping[str, CachedRegion], updated_at: float) -> dict[str, Any]:
    """The document the tracker saves: only measured regions, in the plan's shape."""
    return {
        "metrics": {r: s.ema for r, s in regions.items()},
        "counts": {r: s.samples for r, s in regions.items()},
        "updated_at": updated_at,
        "last_sample_at": {r: s.last_sample_at for r, s in regions.items() if s.last_sample_at is not None},
    }


def decode_document(raw: object) -> DecodedDocument:
    """Validate a document as loaded from any backend; never raises on any input."""
    result = DecodedDocument()
    if not isinstance(raw, Mapping):
        result.problem(f"expected an object, got {type(raw).__name__}")
        return result
    unknown = [key for key in raw if key not in FIELDS]
    if unknown:
        result.problem(f"unknown field(s) {', '.join(show(k) for k in unknown[:5])} ignored")
    metrics = _section(raw, "metrics", result)
    counts = _section(raw, "counts", result)
    stamps = _section(raw, "last_sample_at", result)
    updated_at = raw.get("updated_at")
    why = None if updated_at is None else check_timestamp(updated_at)
    if why is not None:
        result.problem(f"'updated_at' {why}; ignored")
        updated_at = None
    for index, (region, ema) in enumerate(metrics.items()):
        if index >= MAX_REGIONS:
            result.problem(f"more than {MAX_REGIONS} regions; the rest were dropped")
            break
        if not isinstance(region, str) or not region:
            result.problem(f"bad region name {show(region)}")
            continue
        count = counts.get(region, 1)
        stamp = stamps.get(region, updated_at)
        why = _check_region(ema, count, stamp)
        if why is not None:
            result.problem(f"region {show(region)}: {why}")
            continue
        assert isinstance(ema, int | float) and isinstance(count, int)
        last = None if stamp is None else float(stamp)
        result.regions[region] = CachedRegion(ema=float(ema), samples=count, last_sample_at=last)
    return result


def check_latency(value: object) -> str | None:
    """None when `value` is a usable latency in seconds, else why not (without converting huge ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of seconds, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if value < 0:
        return f"must not be negative, got {show(value)}"
    if value > MAX_LATENCY_SECONDS:
        return f"must be at most {MAX_LATENCY_SECONDS:g} seconds, got {show(value)}"
    return None


def check_timestamp(value: object) -> str | None:
    """None when `value` is finite epoch seconds in range, else why not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be epoch seconds, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if not 0 <= value <= MAX_TIMESTAMP:
        return f"must be epoch seconds in [0, {MAX_TIMESTAMP:g}], got {show(value)}"
    return None


def show(value: object, limit: int = 40) -> str:
    """A short repr for log lines: a 400-digit number or a megabyte string is cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"<a {int(value.bit_length() * math.log10(2)) + 1}-digit integer>"
    text = repr(value) if isinstance(value, str | int | float | bool | type(None)) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_region(ema: object, count: object, stamp: object) -> str | None:
    why = check_latency(ema)
    if why is not None:
        return f"metrics {why}"
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SAMPLES:
        return f"counts must be a whole number in [1, 2**53], got {show(count)}"
    if stamp is not None:
        why = check_timestamp(stamp)
        if why is not None:
            return f"last_sample_at {why}"
    return None


def _section(raw: Mapping[Any, Any], name: str, result: DecodedDocument) -> Mapping[Any, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        result.problem(f"'{name}' must be an object, got {type(value).__name__}; ignored")
        return {}
    return value
