"""Recent probe results, kept in memory for the status page: a bounded ring per region and one short list.

Two shapes, because the page asks two questions:

- a chart per (target, region): its last `per_region` samples and the EMA after each, stored as three fixed
  arrays of doubles (time, latency, EMA; NaN for a failed probe's latency) used as a ring: 24 bytes a sample,
  no object per sample. At most `max_series` series are kept; a new one beyond that evicts the series updated
  least recently (a region dropped by a reload goes that way too).
- the newest `listing` results of all targets with everything the probe reported (phases, error kind, detail,
  status), for the page's "recent probes" table.

Memory with the defaults (60 samples, 2,000 series, 500 listed results), measured with tracemalloc: ~2 KB per
series (1.4 KB of arrays, the rest its key and ring object), so at most ~4 MB of series, plus ~0.45 KB per listed
result, ~0.22 MB; for 35 regions x 2 targets, ~0.3 MB in all (docs/STATUS_PAGE.md).
Nothing here is persisted: after a restart the charts start empty (the EMA itself comes back from the cache).
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from region_latency.probes.base import ProbeResult

DEFAULT_PER_REGION = 60
DEFAULT_MAX_SERIES = 2_000
DEFAULT_LISTING = 500
BYTES_PER_SAMPLE = 3 * 8  # time, latency, EMA: one double each


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of a region's chart: when, the measured latency (None: the probe failed) and the EMA after."""

    at: float
    latency: float | None
    ema: float | None


@dataclass(frozen=True, slots=True)
class RecentProbe:
    """One probe result as the recent-probes table shows it."""

    at: float
    target: str
    region: str
    latency: float | None
    phases: Mapping[str, float]
    error: str | None
    detail: str
    status: int | None

    @property
    def ok(self) -> bool:
        return self.latency is not None


class _Series:
    """A fixed-size ring of samples in three arrays of doubles (NaN stands for None)."""

    __slots__ = ("at", "count", "ema", "latency", "next")

    def __init__(self, capacity: int) -> None:
        self.at = array("d", bytes(8 * capacity))
        self.latency = array("d", bytes(8 * capacity))
        self.ema = array("d", bytes(8 * capacity))
        self.next = 0
        self.count = 0

    def add(self, at: float, latency: float | None, ema: float | None) -> None:
        i = self.next
        self.at[i] = at
        self.latency[i] = math.nan if latency is None else latency
        self.ema[i] = math.nan if ema is None else ema
        self.next = (i + 1) % len(self.at)
        self.count = min(self.count + 1, len(self.at))

    def samples(self) -> tuple[Sample, ...]:
        capacity = len(self.at)
        first = (self.next - self.count) % capacity
        out = []
        for k in range(self.count):
            i = (first + k) % capacity
            latency, ema = self.latency[i], self.ema[i]
            out.append(Sample(self.at[i], None if math.isnan(latency) else latency, None if math.isnan(ema) else ema))
        return tuple(out)


class RecentProbes:
    """The bounded in-memory record of recent results; thread-safe (probe threads add, web workers read)."""

    def __init__(self, per_region: int = DEFAULT_PER_REGION, max_series: int = DEFAULT_MAX_SERIES,
                 listing: int = DEFAULT_LISTING) -> None:
        for name, value in (("per_region", per_region), ("max_series", max_series), ("listing", listing)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.per_region = per_region
        self.max_series = max_series
        self._lock = threading.Lock()
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        self._listing: deque[RecentProbe] = deque(maxlen=listing)

    @property
    def max_bytes(self) -> int:
        """The most the series arrays can hold, in bytes (the listing adds ~0.5 KB per listed result)."""
        return self.max_series * self.per_region * BYTES_PER_SAMPLE

    def add(self, target: str, region: str, at: float, result: ProbeResult, ema: float | None) -> None:
        """Keep one result: a point of its region's chart and a row of the listing."""
        entry = RecentProbe(at=at, target=target, region=region, latency=result.latency,
                            phases=MappingProxyType(dict(result.phases)),
                            error=None if result.error is None else str(result.error),
                            detail=result.detail, status=result.status)
        key = (target, region)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= self.max_series:
                    self._series.popitem(last=False)
                series = self._series[key] = _Series(self.per_region)
            else:
                self._series.move_to_end(key)
            series.add(at, result.latency, ema)
            self._listing.append(entry)

    def series(self, target: str, region: str) -> tuple[Sample, ...]:
        """The region's kept samples, oldest first (empty when none)."""
        with self._lock:
            series = self._series.get((target, region))
            return () if series is None else series.samples()

    def listing(self) -> tuple[RecentProbe, ...]:
        """The newest results of every target, newest first."""
        with self._lock:
            return tuple(reversed(self._listing))

    def series_count(self) -> int:
        with self._lock:
            return len(self._series)
