"""The tracker's persistence: reads its document once, then writes it coalesced and retried.

`load()` reads and validates the document (document.py), logs each region it had to drop, and asks the
cache to keep the original aside before a save can overwrite it; it never raises. A fast sample stream
marks the state dirty thousands of times a second; the saver turns that into one write now and one
trailing write per `interval`. A write that fails keeps the state dirty (it is in memory, nothing is lost)
and is retried on a timer with exponential back-off, logged once when saving starts failing (or fails for
another reason) and once when it works again, and counted in `status`. Pending state is also written at
interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from region_latency.cache.base import Cache, CacheError, PreservingCache
from region_latency.cache.document import CACHE_KEY, CachedRegion, decode_document, encode_document

DEFAULT_SAVE_INTERVAL = 5.0
MAX_BACKOFF = 300.0
"""Failed saves are retried after max(interval, 1 s), doubling each time up to this."""


@dataclass(frozen=True, slots=True)
class SaveStatus:
    """The saver's counters, replaced as a whole on every attempt: read `saver.status` without any lock."""

    saves_total: int = 0
    """Successful writes."""
    saves_failed_total: int = 0
    """Failed writes (each retry counts)."""
    consecutive_failures: int = 0
    last_save_ok: bool | None = None
    """None until the first write was attempted."""
    last_success_time: float | None = None
    """Epoch seconds (of the clock the saver was given) of the last successful write."""
    last_error: str | None = None
    """Why the last failed write failed (kept after a success, for context)."""


class CacheSaver:
    """Loads the regions under `key` in `cache`, and writes `regions()` there when marked dirty.

    Writes are coalesced, retried and flushed at exit. `regions` is called with no lock of the saver's held
    except the one serialising writes, so it may take its owner's lock. `interval` 0 writes synchronously on
    every `mark_dirty` while saving works. `clock` stamps `updated_at` and `status.last_success_time`.
    """

    def __init__(
        self,
        cache: Cache,
        regions: Callable[[], Mapping[str, CachedRegion]],
        *,
        key: str = CACHE_KEY,
        interval: float = DEFAULT_SAVE_INTERVAL,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff_initial: float | None = None,
        backoff_max: float = MAX_BACKOFF,
    ) -> None:
        if interval < 0 or not math.isfinite(interval):
            raise ValueError(f"save_interval must be a finite number >= 0, got {interval!r}")
        self.cache = cache
        self.key = key
        self._regions = regions
        self._read_ok = False  # the cache answered a read at least once
        self.interval = interval
        self.logger = logger or logging.getLogger(__name__)
        self._clock = clock
        self._monotonic = monotonic
        self._backoff_initial = max(interval, 1.0) if backoff_initial is None else backoff_initial
        self._backoff_max = max(backoff_max, self._backoff_initial)
        self.status = SaveStatus()
        self._lock = threading.Lock()  # guards the fields below, never held during a write
        self._save_lock = threading.Lock()  # serialises writes
        self._dirty = False
        self._last_attempt = -math.inf  # monotonic time of the last write attempt
        self._retry_at = -math.inf  # no write before this while saving fails
        self._timer: threading.Timer | None = None
        self._closed = False
        self._loads = 0
        self._exit_hook: Callable[[], None] | None = _flush_at_exit(self)

    def load(self) -> dict[str, CachedRegion]:
        """The valid regions the cache holds ({} when it holds none or cannot be read). Never raises.

        Each dropped region is logged; when anything was dropped, the cache keeps the original aside first.
        """
        retry = self._loads > 0
        self._loads += 1
        try:
            cached = self.cache.get(self.key)
        except Exception as exc:  # a broken cache must never break the tracker
            if retry:
                self.logger.debug("the latency cache is still unreadable, saving over it: %s", exc)
            else:
                self.logger.warning("could not read the latency cache, starting empty: %s", exc)
            return {}
        self._read_ok = True
        try:
            if cached is None or (isinstance(cached, dict | str | list) and not cached):
                return {}
            decoded = decode_document(cached)
        except Exception as exc:  # decode_document never raises; this keeps it so for any future bug
            self.logger.warning("ignoring invalid latency cache data, starting empty: %s", exc)
            return {}
        for problem in decoded.problems:
            self.logger.warning("ignoring invalid latency cache data: %s", problem)
        if decoded.dropped:
            self.logger.warning("ignoring invalid latency cache data: %d more problem(s)", decoded.dropped)
        if decoded.problems:
            self._preserve(decoded.summary())
        if retry and decoded.regions:
            self.logger.info("read the latency cache late: %d region(s)", len(decoded.regions))
        else:
            self.logger.debug("loaded latency metrics for %d regions from cache", len(decoded.regions))
        return decoded.regions

    @property
    def needs_read(self) -> bool:
        """The cache was never read and never written: read it before the first write overwrites it."""
        return not self._read_ok and self.status.saves_total == 0

    def mark_dirty(self) -> None:
        """The document changed: write it now or when the interval (or back-off) allows."""
        with self._lock:
            self._dirty = True
        self._kick()

    def flush(self) -> bool:
        """Write pending changes now, back-off or not. True when nothing is pending afterwards."""
        self._cancel_timer()
        ok = self._save()
        if not ok:
            self._kick()
        return ok

    def close(self) -> bool:
        """Flush and stop the timers and the exit hook; later changes are written synchronously when due."""
        with self._lock:
            self._closed = True
        ok = self.flush()
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        return ok

    @property
    def pending(self) -> bool:
        """Whether changes wait to be written."""
        return self._dirty

    # -- internals ----------------------------------------------------------------------------------

    def _preserve(self, reason: str) -> None:
        """Keep the document as loaded before a save replaces the parts that were dropped."""
        if not isinstance(self.cache, PreservingCache):
            self.logger.warning("the latency cache cannot keep a copy; the dropped data is lost at the next save")
            return
        try:
            self.cache.preserve_aside(self.key, reason)
        except CacheError as exc:
            self.logger.warning("could not keep a copy of the latency cache: %s", exc)

    def _kick(self) -> None:
        """Write now when due and writes are synchronous; else make sure a timer waits for the due time."""
        with self._lock:
            if not self._dirty:
                return
            now = self._monotonic()
            due = self._retry_at if self._closed else max(self._last_attempt + self.interval, self._retry_at)
            if self._closed or self.interval == 0:
                if now < due:
                    if self._timer is None and not self._closed:
                        self._start_timer(due - now)
                    return
                timer, self._timer = self._timer, None
            else:
                if self._timer is None:
                    self._start_timer(max(0.0, due - now))
                return
        if timer is not None:
            timer.cancel()
        if not self._save():
            self._kick()

    def _start_timer(self, delay: float) -> None:
        timer = threading.Timer(delay, self._on_timer)
        timer.args = (timer,)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _on_timer(self, timer: threading.Timer) -> None:
        with self._lock:
            if self._timer is not timer:
                return  # cancelled or replaced while it was firing
            self._timer = None
            # the write starts now, with the timer's end: a mark made before _save stamps it again must wait for
            # the interval, not find no timer and no recent write and start a write of its own at once
            self._last_attempt = self._monotonic()
        if not self._save():
            self._kick()  # schedules the retry

    def _cancel_timer(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _save(self) -> bool:
        with self._save_lock:
            with self._lock:
                if not self._dirty:
                    return True
                self._dirty = False  # changes from now on make it dirty again: none is lost
                self._last_attempt = self._monotonic()
            try:
                self.cache.set(self.key, encode_document(self._regions(), self._clock()))
            except Exception as exc:  # whatever a cache raises, the state stays in memory
                with self._lock:
                    self._dirty = True
                self._failed(exc)
                return False
            self._succeeded()
            return True

    def _failed(self, exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        before = self.status
        failures = before.consecutive_failures + 1
        delay = min(self._backoff_max, self._backoff_initial * 2 ** min(failures - 1, 32))
        with self._lock:
            self._retry_at = self._monotonic() + delay
        self.status = replace(before, saves_failed_total=before.saves_failed_total + 1,
                              consecutive_failures=failures, last_save_ok=False, last_error=reason)
        if before.last_save_ok is not False or before.last_error != reason:
            self.logger.warning("could not save latency metrics to cache: %s; they stay in memory, retrying "
                                "with back-off (next in %.0f s)", reason, delay)
        else:
            self.logger.debug("saving latency metrics still fails (%d in a row): %s", failures, reason)

    def _succeeded(self) -> None:
        before = self.status
        with self._lock:
            self._retry_at = -math.inf
        self.status = replace(before, saves_total=before.saves_total + 1, consecutive_failures=0,
                              last_save_ok=True, last_success_time=self._clock())
        if before.last_save_ok is False:
            self.logger.info("saving latency metrics to cache works again, after %d failed attempt(s)",
                                before.consecutive_failures)
        else:
            self.logger.debug("saved latency metrics to cache")


def _flush_at_exit(saver: CacheSaver) -> Callable[[], None]:
    """Write pending changes when the interpreter exits, without keeping the saver alive."""
    ref = weakref.ref(saver)

    def flush() -> None:
        alive = ref()
        if alive is not None:
            with alive._lock:
                alive._closed = True  # no retry timers while the interpreter shuts down
            alive.flush()

    atexit.register(flush)
    return flush
