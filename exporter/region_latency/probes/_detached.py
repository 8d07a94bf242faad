"""Blocking calls that cannot be interrupted (getaddrinfo) run on reused daemon threads.

A probe hands the call over and stops waiting for it at its deadline; the call may go on in its thread. A new
thread per call did that too, but starting one cost a probe about 0.2 ms of CPU at the exporter's cadence
(bench/BENCHMARKS.md, probe CPU), as much as the rest of a DNS lookup. Here a thread that finished its call waits
for the next one; a call that finds no thread waiting gets a new one, so a hung call never holds back another
probe's (as a bounded pool would), and every thread is a daemon, so a hung call never holds back the process's
exit either. A thread idle for IDLE_SECONDS ends.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0

_calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_lock = threading.Lock()
_idle = 0  # threads waiting for a call that no call has been promised to


def run_detached(call: Callable[[], None]) -> None:
    """Run `call` on a waiting thread, or a new one when none waits; it must not raise (catch inside)."""
    global _idle
    with _lock:
        start = _idle == 0
        if not start:
            _idle -= 1  # promised to this call: that thread will not end before taking one
    _calls.put(call)
    if start:
        threading.Thread(target=_serve, name="detached", daemon=True).start()


def _serve() -> None:
    global _idle
    while True:
        try:
            call = _calls.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _lock:
                if _idle > 0:  # no call was promised to a waiting thread: one of them (this one) ends
                    _idle -= 1
                    return
            continue  # a call is on its way to a waiting thread: stay for it
        try:
            call()
        except Exception:  # a bug in the call: its thread stays in service
            log.exception("a detached call raised")
        with _lock:
            _idle += 1


def idle_threads() -> int:
    """Threads waiting for a call (tests)."""
    with _lock:
        return _idle
