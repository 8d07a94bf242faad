"""Reloads, serialized and rate-bounded, on a thread of their own.

A reload starts a short-lived child process (region_latency.resolve) and may take a second. Run on the web
server's worker pool, a flood of `POST /-/reload` (100 of them) once queued every /metrics render behind it:
/metrics answered in 21 s at p50. Here every reload runs on one dedicated thread, at most one at a time and at
most one per `min_interval` seconds, and requests that arrive while one is pending share the result of the next
reload to start (one that started after they arrived, so it saw their file): 100 requests cost at most a handful
of reloads, and the web server's workers never wait for any of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_RELOAD_INTERVAL = 1.0  # seconds between the starts of two reloads


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """What /metrics says about reloads (region_latency_config_last_reload_*)."""

    last_successful: bool
    last_success_at: float  # Unix time of the latest successful (re)load; the start counts as one
    reloads: int  # reloads run (not requested)


class Reloader:
    """Runs `reload` (returns an error message, or None on success) on its own thread, single flight.

    `request()` returns a Future of the result of the next reload to start; every request made before that reload
    starts gets the same Future. The thread starts with the first request.
    """

    def __init__(self, reload: Callable[[], str | None], *, min_interval: float = MIN_RELOAD_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._reload = reload
        self.min_interval = min_interval
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._next: Future[str | None] | None = None
        self._last_start = -float("inf")
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._status = ReloadStatus(last_successful=True, last_success_at=wall_clock(), reloads=0)

    @property
    def status(self) -> ReloadStatus:
        return self._status

    def request(self) -> Future[str | None]:
        """A Future of the outcome of a reload that starts after this call (shared with other waiting callers)."""
        with self._lock:
            if self._stopped:
                done: Future[str | None] = Future()
                done.set_result("the exporter is shutting down")
                return done
            if self._next is None:
                self._next = Future()
                self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
                self._thread.start()
            return self._next

    def stop(self) -> None:
        """No new reloads; a running one finishes on its own (the thread is a daemon)."""
        with self._lock:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._next is None and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    if self._next is not None:
                        self._next.set_result("the exporter is shutting down")
                    return
                wait = self._last_start + self.min_interval - self._clock()
                if wait > 0:
                    self._wake.wait(wait)  # requests arriving meanwhile join the same Future
                    continue
                future, self._next = self._next, None
                self._last_start = self._clock()
            assert future is not None
            try:
                error = self._reload()
            except Exception as exc:  # a bug in a reload must not end the reload thread
                log.exception("reload failed unexpectedly")
                error = f"unexpected error: {type(exc).__name__}: {exc}"
            previous = self._status
            self._status = ReloadStatus(
                last_successful=error is None,
                last_success_at=self._wall() if error is None else previous.last_success_at,
                reloads=previous.reloads + 1,
            )
            future.set_result(error)
