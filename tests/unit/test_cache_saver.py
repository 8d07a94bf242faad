"""The coalescing saver: failed saves keep the state, are retried with back-off, logged once, counted."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from region_latency.cache import CACHE_KEY, CacheError, CacheSaver, MemoryCache
from region_latency.tracker import RegionLatencyTracker


class FlakyCache(MemoryCache):
    """A memory cache whose reads and writes fail while `down` is set, counting the attempts."""

    def __init__(self, *, down: bool = True, read_down: bool = False) -> None:
        super().__init__()
        self.down = down
        self.read_down = read_down
        self.attempts = 0
        self.written = threading.Event()

    def get(self, key: str) -> Any:
        if self.read_down:
            raise CacheError("no route to the cache")
        return super().get(key)

    def set(self, key: str, value: Any) -> None:
        self.attempts += 1
        if self.down:
            raise CacheError("disk full")
        super().set(key, value)
        self.written.set()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failing_saves_keep_the_state_log_once_and_count(caplog: pytest.LogCaptureFixture) -> None:
    cache = FlakyCache()
    with caplog.at_level(logging.INFO):
        tracker = RegionLatencyTracker(cache=cache, save_interval=0, clock=lambda: 1_700_000_000.0)
        for i in range(200):
            tracker.update_latency("eu-west-1", 0.01 * (i % 7))
            tracker.flush()  # every flush tries, back-off or not
    assert tracker.saver is not None
    status = tracker.saver.status
    assert status.last_save_ok is False and status.saves_total == 0
    assert status.saves_failed_total == cache.attempts >= 200
    assert status.last_error is not None and "disk full" in status.last_error
    assert caplog.text.count("could not save latency metrics") == 1  # not once per attempt
    assert tracker.get_sample_count("eu-west-1") == 200  # nothing is lost in memory
    cache.down = False
    with caplog.at_level(logging.INFO):
        tracker.flush()
    assert cache.get(CACHE_KEY)["counts"] == {"eu-west-1": 200}
    status = tracker.saver.status
    assert (status.last_save_ok, status.saves_total, status.consecutive_failures) == (True, 1, 0)
    assert status.last_success_time == 1_700_000_000.0
    assert caplog.text.count("works again") == 1
    tracker.close()


def test_a_new_reason_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    cache = FlakyCache()
    saver = CacheSaver(cache, dict, key="k", interval=0, backoff_initial=3600)
    with caplog.at_level(logging.WARNING):
        saver.mark_dirty()
        saver.flush()
        cache.set = lambda key, value: (_ for _ in ()).throw(CacheError("permission denied"))  # type: ignore[method-assign]
        saver.flush()
        saver.flush()
    assert caplog.text.count("could not save") == 2
    assert "disk full" in caplog.text and "permission denied" in caplog.text
    saver.close()


def test_back_off_spaces_the_attempts() -> None:
    cache = FlakyCache()
    clock = FakeMonotonic()
    saver = CacheSaver(cache, dict, key="k", interval=0, monotonic=clock, clock=lambda: 5.0,
                       backoff_initial=3600, backoff_max=4 * 3600)
    saver.mark_dirty()
    assert cache.attempts == 1
    for _ in range(100):  # samples keep coming while the cache is down: no new attempt before the back-off
        saver.mark_dirty()
    assert cache.attempts == 1
    clock.now += 3601
    saver.mark_dirty()
    assert cache.attempts == 2  # the second delay is twice the first
    clock.now += 3601
    saver.mark_dirty()
    assert cache.attempts == 2
    clock.now += 3600
    cache.down = False
    saver.mark_dirty()
    assert cache.attempts == 3
    assert cache.get("k") == {"metrics": {}, "counts": {}, "updated_at": 5.0, "last_sample_at": {}}
    assert saver.status.last_save_ok is True and not saver.pending
    clock.now += 1
    saver.mark_dirty()  # working again: synchronous saves, no back-off
    assert cache.attempts == 4
    saver.close()


def test_a_failed_save_is_retried_without_new_samples() -> None:
    cache = FlakyCache()
    tracker = RegionLatencyTracker(cache=cache, save_interval=0.01)
    assert tracker.saver is not None
    tracker.saver._backoff_initial = 0.01  # the retry timer, not a flush, must bring the state home
    tracker.update_latency("r", 0.2)
    deadline = time.monotonic() + 10
    while cache.attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cache.down = False
    assert cache.written.wait(10)
    assert cache.get(CACHE_KEY)["metrics"] == {"r": 0.2}
    tracker.close()


def test_a_cache_unreadable_at_start_is_read_before_it_is_overwritten(caplog: pytest.LogCaptureFixture) -> None:
    cache = FlakyCache(down=False, read_down=True)
    cache._data[CACHE_KEY] = {"metrics": {"a": 0.1, "b": 0.2}, "counts": {"a": 4, "b": 9}}
    with caplog.at_level(logging.INFO):
        tracker = RegionLatencyTracker(cache=cache, save_interval=0)
    assert tracker.regions() == [] and "could not read" in caplog.text
    cache.read_down = False  # the cache comes back (Redis restarted, a mount appeared)
    with caplog.at_level(logging.INFO):
        tracker.update_latency("b", 0.4)
    saved = cache.get(CACHE_KEY)
    assert saved["counts"] == {"b": 1, "a": 4}  # "a" survived; "b" measured since the start wins
    assert tracker.get_sample_count("a") == 4
    assert "read the latency cache late" in caplog.text
    tracker.update_latency("a", 0.1)
    assert cache.get(CACHE_KEY)["counts"] == {"b": 1, "a": 5}
    tracker.close()


def test_close_stops_the_exit_hook_and_later_samples_still_save() -> None:
    cache = FlakyCache(down=False)
    tracker = RegionLatencyTracker(cache=cache, save_interval=60)
    tracker.update_latency("r", 0.1)
    tracker.close()
    assert cache.get(CACHE_KEY)["counts"] == {"r": 1}
    tracker.update_latency("r", 0.1)  # after close: written synchronously
    assert cache.get(CACHE_KEY)["counts"] == {"r": 2}


@pytest.mark.parametrize("interval", [-1, float("nan"), float("inf")])
def test_bad_intervals_are_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="save_interval"):
        CacheSaver(MemoryCache(), dict, interval=interval)


def test_pending_samples_are_written_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    child = textwrap.dedent(
        """
        import sys
        from region_latency.cache import FileCache
        from region_latency.tracker import RegionLatencyTracker

        tracker = RegionLatencyTracker(cache=FileCache(sys.argv[1]), save_interval=3600)
        tracker.update_latency("r", 0.1)  # the first write happens at once, on the saver's thread
        tracker.saver.flush()
        tracker.update_latency("r", 0.3)  # this one waits for the interval: only the exit hook writes it
        """
    )
    run = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert json.loads(path.read_text())[CACHE_KEY]["counts"] == {"r": 2}


def test_marks_made_while_a_timed_write_is_starting_wait_for_the_next_slot() -> None:
    """The timer that starts a write cleared itself before the write stamped its start: a mark made in between saw
    no timer and no write yet and started a timer of 0 s, which wrote again right after the first write (a
    clean-clone CI run saw 4 writes where the interval allows the prompt one and a trailing one). The write's
    start is now stamped with the timer's end, so such a mark waits for the interval."""
    writing, finish = threading.Event(), threading.Event()

    class SlowFirstWrite(FlakyCache):
        def set(self, key: str, value: Any) -> None:
            if self.attempts == 0:
                writing.set()
                finish.wait(5)
            super().set(key, value)

    cache = SlowFirstWrite(down=False)
    saver = CacheSaver(cache, lambda: {}, interval=30.0)
    try:
        with saver._save_lock:  # the first timed write stops between clearing its timer and stamping its start
            saver.mark_dirty()
            deadline = time.monotonic() + 5
            while saver._timer is not None and time.monotonic() < deadline:
                time.sleep(0.005)
            assert saver._timer is None  # fired and cleared
            saver.mark_dirty()  # in the window
            time.sleep(0.1)  # a timer of 0 s would have fired by now
        assert writing.wait(5)
        saver.mark_dirty()  # during the first write: pending for the next slot
        finish.set()
        time.sleep(0.3)
        assert cache.attempts == 1  # not a second write at once; the trailing one comes 30 s later
        assert saver.pending
    finally:
        finish.set()
        saver.close()
