"""Per-region latency state: the design plan's EMA, sample counts and sort, plus failure bookkeeping.

State and math only: the tracker never probes (the public `region_latency.RegionLatencyTracker` in
measure.py adds the plan's `measure_latency`), never reads a clock it was not given, and hands
persistence (reading and validating the cached document at start, coalesced and retried writes) to the
`CacheSaver` of `cache/` it owns.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from region_latency.cache.base import Cache
from region_latency.cache.document import CACHE_KEY, MAX_LATENCY_SECONDS, CachedRegion
from region_latency.cache.saver import DEFAULT_SAVE_INTERVAL, CacheSaver

__all__ = [
    "CACHE_KEY",  # re-exported: older code imports it from here
    "LatencyTracker",
    "Outcome",
    "RegionLatencyTracker",
    "RegionStats",
    "TrackerSnapshot",
    "calculate_ema",
    "validate_latency",
]

DEFAULT_ALPHA = 0.3
EARLY_ALPHA = 0.5
EARLY_SAMPLES = 5


class Outcome(Protocol):
    """What `record` needs of a probe result: a latency in seconds, or None and an error."""

    @property
    def latency(self) -> float | None: ...

    @property
    def error(self) -> object: ...


@dataclass(frozen=True, slots=True)
class RegionStats:
    """An immutable copy of one region's state, as of one snapshot."""

    region: str
    ema: float | None
    samples: int
    last_sample_at: float | None
    consecutive_failures: int
    failures_total: int
    last_failure_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class TrackerSnapshot:
    """Every region's state copied under one lock hold, so readers never see half an update."""

    regions: Mapping[str, RegionStats]
    taken_at: float

    def sorted_regions(self, regions: Iterable[str] | None = None) -> list[str]:
        """The plan's sort over this snapshot: ascending EMA, then unmeasured in input order."""
        names = list(self.regions) if regions is None else list(regions)
        return _plan_sort(names, {r: s.ema for r, s in self.regions.items()})


@dataclass(slots=True)
class _RegionState:
    ema: float | None = None
    samples: int = 0
    last_sample_at: float | None = None
    consecutive_failures: int = 0
    failures_total: int = 0
    last_failure_at: float | None = None
    last_error: str | None = None

    def freeze(self, region: str) -> RegionStats:
        return RegionStats(
            region=region,
            ema=self.ema,
            samples=self.samples,
            last_sample_at=self.last_sample_at,
            consecutive_failures=self.consecutive_failures,
            failures_total=self.failures_total,
            last_failure_at=self.last_failure_at,
            last_error=self.last_error,
        )


def validate_latency(latency: object) -> float:
    """Return `latency` as a float, or raise ValueError for negative, NaN, infinite, absurd or non-numbers."""
    if isinstance(latency, bool) or not isinstance(latency, int | float):
        raise ValueError(f"latency must be a number of seconds, got {type(latency).__name__}")
    if (isinstance(latency, float) and not math.isfinite(latency)) or latency < 0:
        raise ValueError(f"latency must be a finite, non-negative number of seconds, got {latency!r}")
    if latency > MAX_LATENCY_SECONDS:
        raise ValueError(f"latency must be at most {MAX_LATENCY_SECONDS:g} seconds, got {latency!r}")
    return float(latency)


def calculate_ema(current_avg: float | None, new_value: float, count: int, alpha: float | None = None) -> float:
    """The plan's EMA: `count` includes the new sample; the first sample is the average.

    Weight of the new sample: `alpha` when given, else 0.5 while count < 5, then 0.3.
    """
    if count <= 1 or current_avg is None:
        return new_value
    if alpha is None:
        alpha = EARLY_ALPHA if count < EARLY_SAMPLES else DEFAULT_ALPHA
    return (alpha * new_value) + ((1 - alpha) * current_avg)


def _plan_sort(regions: list[str], emas: Mapping[str, float | None]) -> list[str]:
    measured = [(r, ema) for r in regions if (ema := emas.get(r)) is not None]
    unmeasured = [r for r in regions if emas.get(r) is None]
    # sorted() is stable: equal averages keep their input order, as in the plan.
    return [r for r, _ in sorted(measured, key=lambda item: item[1])] + unmeasured


class LatencyTracker:
    """Tracks a latency EMA and sample count per AWS region, and sorts regions fastest first.

    Thread-safe: every public method takes one lock for its whole read or update.
    Extra keyword arguments beyond the plan's `(cache, logger)` are optional:
    `alpha` fixes the EMA weight, `clock` supplies epoch seconds (tests), and
    `save_interval` bounds how often the cache is written (0 = on every sample).
    With a cache, `saver` is its `CacheSaver` (whose `status` counts saves and failures).
    """

    def __init__(
        self,
        cache: Cache | None = None,
        logger: logging.Logger | None = None,
        *,
        alpha: float | None = None,
        clock: Callable[[], float] = time.time,
        save_interval: float = DEFAULT_SAVE_INTERVAL,
    ) -> None:
        if alpha is not None and not (0 < alpha <= 1):
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if save_interval < 0 or not math.isfinite(save_interval):
            raise ValueError(f"save_interval must be a finite number >= 0, got {save_interval!r}")
        self._regions: dict[str, _RegionState] = {}
        # each region's frozen stats, kept until that region changes: a snapshot copies only what changed
        self._frozen: dict[str, RegionStats] = {}
        self._lock = threading.Lock()
        self.cache = cache
        self.logger = logger or logging.getLogger(__name__)
        self.alpha = alpha
        self._clock = clock
        self.saver: CacheSaver | None = None
        if cache is not None:
            self.saver = CacheSaver(cache, self._measured_regions, interval=save_interval, logger=self.logger,
                                    clock=clock)
            self._adopt(self.saver.load(), late=False)

    # -- the plan's API -------------------------------------------------------------------------

    def update_latency(self, region: str, latency: float) -> None:
        """Fold one measured latency (seconds) into the region's EMA and count it."""
        value = validate_latency(latency)
        _validate_region(region)
        with self._lock:
            state = self._regions.setdefault(region, _RegionState())
            self._frozen.pop(region, None)
            state.samples += 1
            state.ema = calculate_ema(state.ema, value, state.samples, self.alpha)
            state.last_sample_at = self._clock()
            state.consecutive_failures = 0
        if self.saver is not None:
            self.saver.mark_dirty()

    def get_latency(self, region: str) -> float | None:
        """The region's EMA in seconds, or None when it has never been measured."""
        with self._lock:
            state = self._regions.get(region)
            return None if state is None else state.ema

    def get_sample_count(self, region: str) -> int:
        """How many samples the region's EMA is made of (0 when unknown)."""
        with self._lock:
            state = self._regions.get(region)
            return 0 if state is None else state.samples

    def get_sorted_regions(self, regions: Iterable[str]) -> list[str]:
        """`regions` sorted by ascending EMA; regions without data follow, in input order."""
        names = list(regions)
        with self._lock:
            emas = {r: s.ema for r, s in self._regions.items()}
        return _plan_sort(names, emas)

    # -- beyond the plan ------------------------------------------------------------------------

    def record(self, region: str, result: Outcome) -> None:
        """Feed one probe result: a latency updates the EMA, a failure is counted."""
        if result.latency is not None:
            self.update_latency(region, result.latency)
        else:
            self.record_failure(region, str(result.error or "unknown"))

    def record_failure(self, region: str, error: str = "unknown") -> None:
        """Count a failed measurement. The EMA is left as it was; rankings decide what that means."""
        _validate_region(region)
        with self._lock:
            state = self._regions.setdefault(region, _RegionState())
            self._frozen.pop(region, None)
            state.consecutive_failures += 1
            state.failures_total += 1
            state.last_failure_at = self._clock()
            state.last_error = error

    def snapshot(self) -> TrackerSnapshot:
        """An immutable copy of every region's state, taken under one lock hold."""
        with self._lock:
            kept = self._frozen
            frozen = {}
            for region, state in self._regions.items():
                stats = kept.get(region)
                if stats is None:
                    stats = kept[region] = state.freeze(region)
                frozen[region] = stats
        return TrackerSnapshot(regions=MappingProxyType(frozen), taken_at=self._clock())

    def regions(self) -> list[str]:
        """Every region the tracker has heard of (measured or failed), in first-seen order."""
        with self._lock:
            return list(self._regions)

    def forget(self, region: str) -> None:
        """Drop a region's state (e.g. when it leaves the configuration)."""
        with self._lock:
            dropped = self._regions.pop(region, None) is not None
            self._frozen.pop(region, None)
        if dropped and self.saver is not None:
            self.saver.mark_dirty()

    def flush(self) -> None:
        """Write pending state to the cache now (a no-op when nothing changed)."""
        if self.saver is not None:
            self.saver.flush()

    def close(self) -> None:
        """Flush and stop the background saver; the tracker stays readable."""
        if self.saver is not None:
            self.saver.close()

    def __enter__(self) -> LatencyTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- cache ----------------------------------------------------------------------------------

    def _adopt(self, regions: Mapping[str, CachedRegion], *, late: bool) -> None:
        """Take the regions the cache held; `late` (a cache read only before the first save) keeps newer state."""
        with self._lock:
            for region, cached in regions.items():
                if late and region in self._regions:
                    continue  # what was measured since the start is newer
                self._frozen.pop(region, None)
                self._regions[region] = _RegionState(ema=cached.ema, samples=cached.samples,
                                                     last_sample_at=cached.last_sample_at)

    def _measured_regions(self) -> dict[str, CachedRegion]:
        """What the saver writes; a cache unreadable at start is read (and merged) before it is overwritten."""
        if self.saver is not None and self.saver.needs_read:
            self._adopt(self.saver.load(), late=True)
        with self._lock:
            return {
                r: CachedRegion(ema=s.ema, samples=s.samples, last_sample_at=s.last_sample_at)
                for r, s in self._regions.items()
                if s.ema is not None
            }


RegionLatencyTracker = LatencyTracker
"""Internal users' name for the core class; the library's `region_latency.RegionLatencyTracker` (measure.py) adds
`measure_latency` and `probe_once`."""


def _validate_region(region: object) -> None:
    if not isinstance(region, str) or not region:
        raise ValueError(f"region must be a non-empty string, got {region!r}")
