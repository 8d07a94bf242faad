"""TargetState at 1,000 pairs (issue 15): work per probe result, histogram buckets per target, region versions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from region_latency.metric_options import HistogramOptions, MetricsOptions
from region_latency.probes.base import ProbeResult
from region_latency.ranking import PlainRanking, Ranking, TrustedRanking
from region_latency.state import REEVALUATE_AFTER, TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker, TrackerSnapshot


class CountingTracker(RegionLatencyTracker):
    def __init__(self) -> None:
        super().__init__()
        self.snapshots = 0

    def snapshot(self) -> TrackerSnapshot:
        self.snapshots += 1
        return super().snapshot()


class CountingPolicy(PlainRanking):
    def __init__(self) -> None:
        self.evaluations = 0

    def evaluate(self, snapshot: TrackerSnapshot, regions: Sequence[str], now: float) -> Ranking:
        self.evaluations += 1
        return super().evaluate(snapshot, regions, now)


def test_a_result_copies_the_tracker_once_and_the_snapshot_shows_that_copy() -> None:
    tracker = CountingTracker()
    state = TargetState(TargetInfo("t", "s", "https"), ["a", "b"], tracker, PlainRanking(), clock=lambda: 1000.0)
    before = tracker.snapshots
    state.record("a", ProbeResult(0.05))
    snap = state.snapshot()
    assert tracker.snapshots == before + 1
    assert snap.tracker.regions["a"].samples == 1
    assert snap.ranking.fastest == "a"


def test_the_clock_tick_does_not_rank_again_what_a_result_just_ranked() -> None:
    now = [1000.0]
    policy = CountingPolicy()
    state = TargetState(TargetInfo("t", "s", "https"), ["a"], RegionLatencyTracker(), policy, clock=lambda: now[0])
    state.record("a", ProbeResult(0.05))
    evaluations = policy.evaluations
    state.reevaluate(now[0] + REEVALUATE_AFTER / 2)
    assert policy.evaluations == evaluations
    state.reevaluate(now[0] + REEVALUATE_AFTER)
    assert policy.evaluations == evaluations + 1


def test_staleness_still_comes_on_the_clock() -> None:
    now = [1000.0]
    state = TargetState(TargetInfo("t", "s", "https"), ["a"], RegionLatencyTracker(clock=lambda: now[0]),
                        TrustedRanking(10.0, min_samples=1), clock=lambda: now[0])
    state.record("a", ProbeResult(0.05))
    assert state.snapshot().ranking.fastest == "a"
    generation = state.snapshot().generation
    state.reevaluate(1000.0 + 31.0)  # ttl: 3 intervals
    assert state.snapshot().ranking.fastest is None
    assert state.snapshot().generation == generation + 1


def test_buckets_per_target_and_a_reload_that_changes_them_starts_afresh() -> None:
    state = TargetState(TargetInfo("t", "s", "https"), ["a"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0, metrics=MetricsOptions(histogram=HistogramOptions(buckets=(0.1, 1.0))))
    for latency in (0.05, 0.5, 5.0):
        state.record("a", ProbeResult(latency))
    snap = state.snapshot()
    assert snap.buckets == (0.1, 1.0)
    assert snap.histograms["a"].bucket_counts == (1, 1, 1)
    state.set_metrics(MetricsOptions(histogram=HistogramOptions(buckets=(0.2,))))
    assert "a" not in state.snapshot().histograms
    state.record("a", ProbeResult(0.05))
    assert state.snapshot().histograms["a"].bucket_counts == (1, 0)
    phases_only = MetricsOptions(histogram=HistogramOptions(buckets=(0.2,)), phases=("ttfb",))
    state.set_metrics(phases_only)  # same buckets: the counts stay
    assert state.snapshot().histograms["a"].count == 1


def test_histogram_off_keeps_no_counts() -> None:
    state = TargetState(TargetInfo("t", "s", "https"), ["a"], RegionLatencyTracker(), PlainRanking(),
                        metrics=MetricsOptions(histogram=HistogramOptions(enabled=False)))
    state.record("a", ProbeResult(0.05))
    assert not state.snapshot().histograms


def test_a_frozen_histogram_is_made_once_per_sample_not_once_per_snapshot() -> None:
    state = TargetState(TargetInfo("t", "s", "https"), ["a", "b"], RegionLatencyTracker(), PlainRanking())
    state.record("a", ProbeResult(0.05))
    first = state.snapshot().histograms["a"]
    state.record("b", ProbeResult(0.05))
    assert state.snapshot().histograms["a"] is first


def test_region_versions_move_with_the_regions_own_results() -> None:
    state = TargetState(TargetInfo("t", "s", "https"), ["a", "b"], RegionLatencyTracker(), PlainRanking())
    state.record("a", ProbeResult(0.05))
    versions = dict(state.snapshot().region_versions)
    state.record("b", ProbeResult(0.05))
    after = state.snapshot().region_versions
    assert after["a"] == versions["a"] and after["b"] == versions.get("b", 0) + 1


@pytest.mark.parametrize("bad", [[], [0.1, 0.1], [0.2, 0.1], [0], [-1], ["x"], [float("inf")], [True]])
def test_bad_buckets_are_refused(bad: list[object]) -> None:
    with pytest.raises(ValueError):
        MetricsOptions.model_validate({"histogram": {"buckets": bad}})
