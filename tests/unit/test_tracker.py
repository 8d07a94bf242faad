"""The tracker's contract: the plan's EMA rule, sort, bad input, thread safety and failure bookkeeping."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from region_latency.cache import MemoryCache
from region_latency.tracker import RegionLatencyTracker, calculate_ema


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_worked_example_from_the_issue() -> None:
    tracker = RegionLatencyTracker()
    expected = [0.100, 0.150, 0.225, 0.3125, 0.36875]
    for sample, average in zip([0.1, 0.2, 0.3, 0.4, 0.5], expected, strict=True):
        tracker.update_latency("us-east-1", sample)
        assert tracker.get_latency("us-east-1") == pytest.approx(average, abs=1e-12)
    assert tracker.get_sample_count("us-east-1") == 5


def test_weight_is_half_below_five_samples_then_point_three() -> None:
    assert calculate_ema(None, 0.7, 1) == 0.7
    assert calculate_ema(1.0, 0.0, 2) == 0.5
    assert calculate_ema(1.0, 0.0, 4) == 0.5
    assert calculate_ema(1.0, 0.0, 5) == pytest.approx(0.7)
    assert calculate_ema(1.0, 0.0, 500) == pytest.approx(0.7)


def test_explicit_alpha_overrides_the_adaptive_weight() -> None:
    assert calculate_ema(1.0, 0.0, 2, alpha=0.1) == pytest.approx(0.9)
    tracker = RegionLatencyTracker(alpha=0.1)
    tracker.update_latency("r", 1.0)  # the first sample is still the average
    tracker.update_latency("r", 0.0)
    assert tracker.get_latency("r") == pytest.approx(0.9)


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5, math.nan])
def test_invalid_alpha_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        RegionLatencyTracker(alpha=alpha)


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=60))
def test_average_stays_within_the_range_of_samples(samples: list[float]) -> None:
    tracker = RegionLatencyTracker()
    for sample in samples:
        tracker.update_latency("r", sample)
    average = tracker.get_latency("r")
    assert average is not None
    assert min(samples) - 1e-9 <= average <= max(samples) + 1e-9
    assert tracker.get_sample_count("r") == len(samples)


@given(st.floats(min_value=0, max_value=1e4, allow_nan=False), st.integers(min_value=1, max_value=50))
def test_constant_samples_give_that_constant(value: float, n: int) -> None:
    tracker = RegionLatencyTracker()
    for _ in range(n):
        tracker.update_latency("r", value)
    assert tracker.get_latency("r") == pytest.approx(value)


def test_unknown_region_has_no_latency() -> None:
    tracker = RegionLatencyTracker()
    assert tracker.get_latency("eu-west-1") is None
    assert tracker.get_sample_count("eu-west-1") == 0


def test_sort_ascending_with_unmeasured_at_the_end_in_input_order() -> None:
    tracker = RegionLatencyTracker()
    tracker.update_latency("us-west-2", 0.080)
    tracker.update_latency("eu-west-1", 0.020)
    tracker.update_latency("ap-northeast-1", 0.200)
    regions = ["zz-unmeasured-2", "us-west-2", "ap-northeast-1", "aa-unmeasured-1", "eu-west-1"]
    assert tracker.get_sorted_regions(regions) == [
        "eu-west-1", "us-west-2", "ap-northeast-1", "zz-unmeasured-2", "aa-unmeasured-1",
    ]


def test_sort_keeps_input_order_for_ties_and_only_returns_what_was_asked() -> None:
    tracker = RegionLatencyTracker()
    for region in ("b", "a", "c"):
        tracker.update_latency(region, 0.05)
    tracker.update_latency("not-asked", 0.001)
    assert tracker.get_sorted_regions(["c", "a", "b"]) == ["c", "a", "b"]
    assert tracker.get_sorted_regions(iter(["a", "b"])) == ["a", "b"]
    assert tracker.get_sorted_regions([]) == []


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf, -math.inf, "0.1", None, True, [0.1]])
def test_bad_latency_raises_and_changes_nothing(bad: object) -> None:
    tracker = RegionLatencyTracker()
    tracker.update_latency("r", 0.1)
    with pytest.raises(ValueError):
        tracker.update_latency("r", bad)  # type: ignore[arg-type]
    assert tracker.get_latency("r") == 0.1
    assert tracker.get_sample_count("r") == 1
    with pytest.raises(ValueError):
        tracker.update_latency("fresh", bad)  # type: ignore[arg-type]
    assert tracker.regions() == ["r"]


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_region_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="region"):
        RegionLatencyTracker().update_latency(bad, 0.1)  # type: ignore[arg-type]


def test_integer_latency_is_accepted_as_seconds() -> None:
    tracker = RegionLatencyTracker()
    tracker.update_latency("r", 1)
    assert tracker.get_latency("r") == 1.0


def test_concurrent_updates_lose_no_sample() -> None:
    tracker = RegionLatencyTracker()
    threads_n, per_thread = 8, 10_000
    barrier = threading.Barrier(threads_n)
    torn: list[object] = []

    def work(i: int) -> None:
        region = "shared" if i % 2 == 0 else f"own-{i}"
        barrier.wait()
        for k in range(per_thread):
            tracker.update_latency(region, 0.010 + (k % 7) * 0.001)
            if k % 500 == 0:
                snap = tracker.snapshot().regions.get(region)
                if snap is not None and (snap.ema is None or not 0.010 <= snap.ema <= 0.016 + 1e-12):
                    torn.append(snap)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not torn
    assert tracker.get_sample_count("shared") == (threads_n // 2) * per_thread
    for i in range(1, threads_n, 2):
        assert tracker.get_sample_count(f"own-{i}") == per_thread


def test_failures_are_counted_and_do_not_touch_the_average() -> None:
    clock = FakeClock()
    tracker = RegionLatencyTracker(clock=clock)
    tracker.update_latency("r", 0.05)
    clock.now += 10
    tracker.record_failure("r", "timeout")
    tracker.record_failure("r", "refused")
    stats = tracker.snapshot().regions["r"]
    assert (stats.ema, stats.samples) == (0.05, 1)
    assert stats.consecutive_failures == 2
    assert stats.failures_total == 2
    assert stats.last_error == "refused"
    assert stats.last_failure_at == clock.now
    assert stats.last_sample_at == clock.now - 10
    tracker.update_latency("r", 0.05)
    stats = tracker.snapshot().regions["r"]
    assert stats.consecutive_failures == 0
    assert stats.failures_total == 2


def test_failed_only_region_sorts_as_unmeasured() -> None:
    tracker = RegionLatencyTracker()
    tracker.record_failure("dead", "dns")
    tracker.update_latency("alive", 0.3)
    assert tracker.get_latency("dead") is None
    assert tracker.get_sorted_regions(["dead", "alive"]) == ["alive", "dead"]


def test_snapshot_is_immutable_and_detached() -> None:
    tracker = RegionLatencyTracker()
    tracker.update_latency("r", 0.1)
    snap = tracker.snapshot()
    tracker.update_latency("r", 0.3)
    assert snap.regions["r"].ema == 0.1
    with pytest.raises(TypeError):
        snap.regions["x"] = snap.regions["r"]  # type: ignore[index]
    assert snap.sorted_regions() == ["r"]


def test_forget_drops_a_region() -> None:
    cache = MemoryCache()
    tracker = RegionLatencyTracker(cache=cache, save_interval=0)
    tracker.update_latency("a", 0.1)
    tracker.update_latency("b", 0.2)
    tracker.forget("a")
    assert tracker.regions() == ["b"]
    assert set(cache.get("region_latencies")["metrics"]) == {"b"}


def test_a_snapshot_copies_only_the_regions_that_changed() -> None:
    """A probe result changes one region: the next snapshot reuses the other regions' frozen stats (with many
    regions per target, re-freezing every region on every result was most of a result's cost)."""
    tracker = RegionLatencyTracker(clock=lambda: 100.0)
    for region in ("a", "b", "c"):
        tracker.update_latency(region, 0.1)
    first = tracker.snapshot().regions
    tracker.update_latency("a", 0.3)
    tracker.record_failure("c", "timeout")
    second = tracker.snapshot().regions
    assert second["b"] is first["b"]
    assert second["a"] is not first["a"] and second["a"].ema == 0.2 and second["a"].samples == 2
    assert second["c"] is not first["c"] and second["c"].consecutive_failures == 1
    assert first["a"].ema == 0.1 and first["c"].consecutive_failures == 0  # earlier snapshots never change
    tracker.forget("b")
    assert list(tracker.snapshot().regions) == ["a", "c"]
    tracker.update_latency("b", 0.5)  # back after being forgotten: fresh, not the old frozen stats
    assert tracker.snapshot().regions["b"].samples == 1
