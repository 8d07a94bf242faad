"""Per-region latency state: the design plan's EMA, sample counts and sort, plus failure bookkeeping.

The tracker holds state and math only. It never probes by itself except through
`measure_latency` (the plan's convenience), never reads a clock it was not given, and
writes to its cache through a coalescing saver so that fast sample streams do not
rewrite storage on every sample.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from region_latency.probes.base import ProbeResult

CACHE_KEY = "region_latencies"
DEFAULT_ALPHA = 0.3
EARLY_ALPHA = 0.5
EARLY_SAMPLES = 5
DEFAULT_SAVE_INTERVAL = 5.0


class Cache(Protocol):
    """Anything with `get(key)` and `set(key, value)`: a dict-like store of JSON-able values."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


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
    """Return `latency` as a float, or raise ValueError for negative, NaN, infinite or non-numbers."""
    if isinstance(latency, bool) or not isinstance(latency, int | float):
        raise ValueError(f"latency must be a number of seconds, got {type(latency).__name__}")
    value = float(latency)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"latency must be a finite, non-negative number of seconds, got {latency!r}")
    return value


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
    measured = [(r, emas[r]) for r in regions if emas.get(r) is not None]
    unmeasured = [r for r in regions if emas.get(r) is None]
    # sorted() is stable: equal averages keep their input order, as in the plan.
    return [r for r, _ in sorted(measured, key=lambda item: item[1])] + unmeasured


class RegionLatencyTracker:
    """Tracks a latency EMA and sample count per AWS region, and sorts regions fastest first.

    Thread-safe: every public method takes one lock for its whole read or update.
    Extra keyword arguments beyond the plan's `(cache, logger)` are optional:
    `alpha` fixes the EMA weight, `clock` supplies epoch seconds (tests), and
    `save_interval` bounds how often the cache is written (0 = on every sample).
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
        self._lock = threading.Lock()
        self.cache = cache
        self.logger = logger or logging.getLogger(__name__)
        self.alpha = alpha
        self._clock = clock
        self._save_interval = save_interval
        self._save_lock = threading.Lock()  # serialises writes to the cache
        self._dirty = False
        self._last_save = -math.inf  # time.monotonic() of the last save
        self._timer: threading.Timer | None = None
        self._closed = False
        self._load_cached_latencies()
        self._exit_hook = _flush_at_exit(self) if cache is not None else None

    # -- the plan's API -------------------------------------------------------------------------

    def update_latency(self, region: str, latency: float) -> None:
        """Fold one measured latency (seconds) into the region's EMA and count it."""
        value = validate_latency(latency)
        _validate_region(region)
        with self._lock:
            state = self._regions.setdefault(region, _RegionState())
            state.samples += 1
            state.ema = calculate_ema(state.ema, value, state.samples, self.alpha)
            state.last_sample_at = self._clock()
            state.consecutive_failures = 0
            self._dirty = True
        self._schedule_save()

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

    def measure_latency(
        self,
        region: str,
        endpoint: str = "bedrock",
        *,
        probe: str = "https",
        timeout: float = 5.0,
        options: Mapping[str, Any] | None = None,
    ) -> float | None:
        """Measure `endpoint` (a botocore service name or a URL, e.g. https://…) in `region` once.

        Returns the latency in seconds and feeds it to `update_latency`, or returns None and
        counts a failure when the probe failed. What is timed is the probe's network window
        only (see docs/PROBES.md): client set-up, retries and result parsing are excluded.
        `options` are the probe kind's options (e.g. `{"ca_file": ...}`).
        """
        result = self.probe_once(region, endpoint, probe=probe, timeout=timeout, options=options)
        return result.latency

    # -- beyond the plan ------------------------------------------------------------------------

    def probe_once(
        self,
        region: str,
        endpoint: str = "bedrock",
        *,
        probe: str = "https",
        timeout: float = 5.0,
        options: Mapping[str, Any] | None = None,
        service: str | None = None,
    ) -> ProbeResult:
        """Like `measure_latency`, but returns the whole probe result (phases, error kind).

        When `endpoint` is a URL, `service` names the botocore service behind it (the `api`
        probe needs it to sign its call).
        """
        from region_latency.probes import check_target, get_probe
        from region_latency.probes.base import Target
        from region_latency.regions import endpoint_url

        if "://" in endpoint:
            target = Target(service=service or "custom", region=region, url=endpoint, options=dict(options or {}))
        else:
            target = Target(service=endpoint, region=region, url=endpoint_url(endpoint, region),
                            options=dict(options or {}))
        check_target(probe, target)
        result = get_probe(probe)(target, timeout)
        self.record(region, result)
        return result

    def record(self, region: str, result: ProbeResult) -> None:
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
            state.consecutive_failures += 1
            state.failures_total += 1
            state.last_failure_at = self._clock()
            state.last_error = error

    def snapshot(self) -> TrackerSnapshot:
        """An immutable copy of every region's state, taken under one lock hold."""
        with self._lock:
            frozen = {region: state.freeze(region) for region, state in self._regions.items()}
        return TrackerSnapshot(regions=MappingProxyType(frozen), taken_at=self._clock())

    def regions(self) -> list[str]:
        """Every region the tracker has heard of (measured or failed), in first-seen order."""
        with self._lock:
            return list(self._regions)

    def forget(self, region: str) -> None:
        """Drop a region's state (e.g. when it leaves the configuration)."""
        with self._lock:
            if self._regions.pop(region, None) is not None:
                self._dirty = True
        self._schedule_save()

    def flush(self) -> None:
        """Write pending state to the cache now (a no-op when nothing changed)."""
        self._cancel_timer()
        self._save_latencies_to_cache(only_if_dirty=True)

    def close(self) -> None:
        """Flush and stop the background saver; the tracker stays readable."""
        self._closed = True
        self.flush()
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None

    def __enter__(self) -> RegionLatencyTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- cache ----------------------------------------------------------------------------------

    def _load_cached_latencies(self) -> None:
        if self.cache is None:
            return
        try:
            cached = self.cache.get(CACHE_KEY)
        except Exception as exc:  # a broken cache must never break the tracker
            self.logger.warning("could not read the latency cache, starting empty: %s", exc)
            return
        if not cached:
            return
        try:
            loaded = _parse_cache_document(cached)
        except ValueError as exc:
            self.logger.warning("ignoring invalid latency cache data, starting empty: %s", exc)
            return
        with self._lock:
            self._regions = loaded
        self.logger.debug("loaded latency metrics for %d regions from cache", len(loaded))

    def _save_latencies_to_cache(self, *, only_if_dirty: bool = False) -> None:
        if self.cache is None:
            return
        with self._save_lock:
            with self._lock:
                if only_if_dirty and not self._dirty:
                    return
                document = {
                    "metrics": {r: s.ema for r, s in self._regions.items() if s.ema is not None},
                    "counts": {r: s.samples for r, s in self._regions.items() if s.ema is not None},
                    "updated_at": self._clock(),
                    "last_sample_at": {
                        r: s.last_sample_at
                        for r, s in self._regions.items()
                        if s.ema is not None and s.last_sample_at is not None
                    },
                }
                self._dirty = False
                self._last_save = time.monotonic()
            try:
                self.cache.set(CACHE_KEY, document)
            except Exception as exc:
                with self._lock:
                    self._dirty = True  # keep it pending: the next save tries again
                self.logger.warning("could not save latency metrics to cache: %s", exc)
                return
        self.logger.debug("saved latency metrics for %d regions to cache", len(document["metrics"]))

    def _schedule_save(self) -> None:
        """Coalesce saves: at most one write per `save_interval`, the last one trailing."""
        if self.cache is None:
            return
        if self._save_interval == 0 or self._closed:
            self._save_latencies_to_cache(only_if_dirty=True)
            return
        with self._lock:
            if self._timer is not None:
                return
            delay = max(0.0, self._last_save + self._save_interval - time.monotonic())
            timer = threading.Timer(delay, self._trailing_save)
            timer.daemon = True
            self._timer = timer
        timer.start()

    def _trailing_save(self) -> None:
        with self._lock:
            self._timer = None
        self._save_latencies_to_cache(only_if_dirty=True)

    def _cancel_timer(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def _validate_region(region: object) -> None:
    if not isinstance(region, str) or not region:
        raise ValueError(f"region must be a non-empty string, got {region!r}")


def _parse_cache_document(cached: object) -> dict[str, _RegionState]:
    """Validate the plan's cache document; raise ValueError naming what is wrong."""
    if not isinstance(cached, Mapping):
        raise ValueError(f"expected an object, got {type(cached).__name__}")
    metrics = cached.get("metrics", {})
    counts = cached.get("counts", {})
    stamps = cached.get("last_sample_at", {}) or {}
    updated_at = cached.get("updated_at")
    for name, value in (("metrics", metrics), ("counts", counts), ("last_sample_at", stamps)):
        if not isinstance(value, Mapping):
            raise ValueError(f"'{name}' must be an object, got {type(value).__name__}")
    if updated_at is not None and (isinstance(updated_at, bool) or not isinstance(updated_at, int | float)):
        raise ValueError("'updated_at' must be epoch seconds")
    loaded: dict[str, _RegionState] = {}
    for region, ema in metrics.items():
        if not isinstance(region, str) or not region:
            raise ValueError(f"bad region name {region!r}")
        try:
            value = validate_latency(ema)
        except ValueError as exc:
            raise ValueError(f"metrics[{region!r}]: {exc}") from None
        count = counts.get(region, 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"counts[{region!r}] must be a whole number >= 1, got {count!r}")
        stamp = stamps.get(region, updated_at)
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
            raise ValueError(f"last_sample_at[{region!r}] must be epoch seconds")
        loaded[region] = _RegionState(ema=value, samples=count, last_sample_at=stamp)
    return loaded


def _flush_at_exit(tracker: RegionLatencyTracker) -> Callable[[], None]:
    """Save pending samples when the interpreter exits, without keeping the tracker alive."""
    ref = weakref.ref(tracker)

    def flush() -> None:
        alive = ref()
        if alive is not None:
            alive.flush()

    atexit.register(flush)
    return flush
