"""The tracker's cache contract: the plan's document, loading, corrupt data, coalesced saves."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from region_latency.cache import CACHE_KEY, CacheError, FileCache, MemoryCache, PrefixedCache
from region_latency.tracker import RegionLatencyTracker


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Event()

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        self.writes += 1
        self.written.set()


class BrokenCache:
    def get(self, key: str) -> Any:
        raise CacheError("disk on fire")

    def set(self, key: str, value: Any) -> None:
        raise CacheError("disk on fire")


def test_saved_document_has_the_plan_shape() -> None:
    cache = MemoryCache()
    tracker = RegionLatencyTracker(cache=cache, save_interval=0, clock=lambda: 1234.5)
    tracker.update_latency("us-east-1", 0.1)
    tracker.update_latency("us-east-1", 0.2)
    tracker.record_failure("never-answered", "timeout")
    document = cache.get(CACHE_KEY)
    assert document["metrics"] == {"us-east-1": pytest.approx(0.15)}
    assert document["counts"] == {"us-east-1": 2}
    assert document["updated_at"] == 1234.5
    json.dumps(document, allow_nan=False)  # JSON-able as stored


def test_round_trip_through_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "latencies.json"
    first = RegionLatencyTracker(cache=FileCache(path))
    first.update_latency("eu-west-1", 0.02)
    first.update_latency("us-west-2", 0.09)
    first.update_latency("us-west-2", 0.07)
    first.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = RegionLatencyTracker(cache=FileCache(path))
    assert second.get_latency("us-west-2") == pytest.approx(0.08)
    assert second.get_sample_count("us-west-2") == 2
    assert second.get_sorted_regions(["us-west-2", "eu-west-1"]) == ["eu-west-1", "us-west-2"]
    # counting continues from the cached count: the 3rd sample uses weight 0.5
    second.update_latency("us-west-2", 0.0)
    assert second.get_latency("us-west-2") == pytest.approx(0.04)


def test_plan_document_without_extras_loads() -> None:
    cache = MemoryCache()
    cache.set(CACHE_KEY, {"metrics": {"a": 0.2, "b": 0.1}, "counts": {"a": 3, "b": 9}, "updated_at": 99.0})
    tracker = RegionLatencyTracker(cache=cache)
    assert tracker.get_sorted_regions(["a", "b"]) == ["b", "a"]
    assert tracker.get_sample_count("b") == 9
    assert tracker.snapshot().regions["a"].last_sample_at == 99.0


@pytest.mark.parametrize(
    "document",
    [
        "not a dict",
        ["a", 1],
        {"metrics": "x"},
        {"metrics": {"a": "fast"}},
        {"metrics": {"a": -1}},
        {"metrics": {"a": 0.1}, "counts": {"a": 0}},
        {"metrics": {"a": 0.1}, "counts": {"a": 1.5}},
        {"metrics": {"": 0.1}},
    ],
)
def test_invalid_cache_data_warns_and_starts_empty(document: object, caplog: pytest.LogCaptureFixture) -> None:
    cache = MemoryCache()
    cache.set(CACHE_KEY, document)
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=cache)
    assert tracker.regions() == []
    assert "invalid latency cache" in caplog.text


def test_a_bad_updated_at_is_ignored_and_the_regions_load(caplog: pytest.LogCaptureFixture) -> None:
    cache = MemoryCache()
    cache.set(CACHE_KEY, {"metrics": {"a": 0.1}, "updated_at": "yesterday"})
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=cache)
    assert tracker.get_latency("a") == 0.1
    assert tracker.snapshot().regions["a"].last_sample_at is None
    assert "invalid latency cache" in caplog.text and "updated_at" in caplog.text
    assert cache.get(CACHE_KEY + ".corrupt") == [{"metrics": {"a": 0.1}, "updated_at": "yesterday"}]


@pytest.mark.parametrize("document", [None, {}, ""])
def test_missing_or_empty_cache_is_silent(document: object, caplog: pytest.LogCaptureFixture) -> None:
    cache = MemoryCache()
    cache.set(CACHE_KEY, document)
    with caplog.at_level(logging.WARNING):
        assert RegionLatencyTracker(cache=cache).regions() == []
    assert caplog.text == ""


def test_unreadable_cache_warns_and_saving_errors_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=BrokenCache(), save_interval=0)
        tracker.update_latency("r", 0.1)
        tracker.flush()
    assert tracker.get_latency("r") == 0.1
    assert "could not read" in caplog.text
    assert "could not save" in caplog.text


def test_corrupt_file_is_recovered_and_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    path.write_text('{"region_latencies": {"metrics": {"a": 0.1}')  # truncated
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=FileCache(path), save_interval=0)
    assert tracker.regions() == []
    assert "not valid JSON" in caplog.text
    tracker.update_latency("b", 0.2)
    assert json.loads(path.read_text())[CACHE_KEY]["metrics"] == {"b": 0.2}
    kept = list(tmp_path.glob("latencies.json.corrupt-*"))
    assert len(kept) == 1
    assert kept[0].read_text().startswith('{"region_latencies"')


def test_file_cache_keeps_other_keys(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "c.json")
    cache.set("one", {"x": 1})
    cache.set("two", [1, 2])
    assert FileCache(tmp_path / "c.json").get("one") == {"x": 1}
    assert cache.get("missing") is None


def test_file_cache_refuses_nan_without_losing_the_old_document(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "c.json")
    cache.set("k", 1)
    with pytest.raises(CacheError):
        cache.set("k", float("nan"))
    assert cache.get("k") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_fast_samples_are_coalesced_and_flush_saves_the_rest() -> None:
    cache = CountingCache()
    tracker = RegionLatencyTracker(cache=cache, save_interval=30)
    for i in range(5000):
        tracker.update_latency("r", 0.001 * (i % 10))
    assert cache.written.wait(5)  # the first save happens promptly, on the saver thread
    tracker.flush()
    # the prompt first save, plus one for what came after it (none when the saver thread started late, on a
    # busy machine): never a write per sample
    assert cache.writes in (1, 2)
    assert cache.get(CACHE_KEY)["counts"] == {"r": 5000}
    writes = cache.writes
    tracker.flush()  # nothing pending: no write
    assert cache.writes == writes
    tracker.close()


def test_trailing_save_happens_without_flush() -> None:
    cache = CountingCache()
    tracker = RegionLatencyTracker(cache=cache, save_interval=0.2)
    tracker.update_latency("r", 0.1)
    assert cache.written.wait(5)
    cache.written.clear()
    tracker.update_latency("r", 0.3)  # inside the interval: deferred, not dropped
    deadline = time.monotonic() + 5
    while cache.get(CACHE_KEY)["counts"] != {"r": 2} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.get(CACHE_KEY)["counts"] == {"r": 2}
    tracker.close()


def test_prefixed_caches_do_not_collide() -> None:
    shared = MemoryCache()
    a = RegionLatencyTracker(cache=PrefixedCache(shared, "bedrock-https"), save_interval=0)
    b = RegionLatencyTracker(cache=PrefixedCache(shared, "bedrock-tcp"), save_interval=0)
    a.update_latency("r", 0.1)
    b.update_latency("r", 0.9)
    assert RegionLatencyTracker(cache=PrefixedCache(shared, "bedrock-https")).get_latency("r") == 0.1
    assert RegionLatencyTracker(cache=PrefixedCache(shared, "bedrock-tcp")).get_latency("r") == 0.9
