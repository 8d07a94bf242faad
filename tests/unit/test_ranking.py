"""Ranking policies: the plan's sort, and the trusted policy's ejection, staleness, cold start and hysteresis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from region_latency.cache import MemoryCache
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import (
    PlainRanking,
    Ranking,
    RankingSettingError,
    RankingSettings,
    RegionState,
    TrustedRanking,
    policy_for,
)
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import CACHE_KEY, RegionLatencyTracker

INTERVAL = 30.0
REGIONS = ("a", "b", "c")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Bench:
    """A tracker on a fake clock plus a policy: feed samples and failures, read rankings."""

    def __init__(self, policy: TrustedRanking | PlainRanking | None = None, regions: tuple[str, ...] = REGIONS) -> None:
        self.clock = Clock()
        self.tracker = RegionLatencyTracker(clock=self.clock, save_interval=0)
        self.policy = policy if policy is not None else TrustedRanking(INTERVAL)
        self.regions = regions

    def sample(self, region: str, latency: float, times: int = 1) -> Ranking:
        """Feed `times` samples, evaluating after each one (as TargetState does); the last ranking."""
        for _ in range(times):
            self.tracker.update_latency(region, latency)
            ranking = self.evaluate()
        return ranking

    def fail(self, region: str, times: int = 1) -> Ranking:
        for _ in range(times):
            self.tracker.record_failure(region, "timeout")
            ranking = self.evaluate()
        return ranking

    def evaluate(self) -> Ranking:
        return self.policy.evaluate(self.tracker.snapshot(), self.regions, self.clock.now)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    def round(self, **latencies: float) -> Ranking:
        """One probe round: every named region answers, evaluated after each result (as TargetState does)."""
        ranking = self.evaluate()
        for region, latency in latencies.items():
            ranking = self.sample(region, latency)
        return ranking


def states(ranking: Ranking) -> dict[str, RegionState]:
    return {entry.region: entry.state for entry in ranking.entries}


def warm(bench: Bench, **latencies: float) -> Ranking:
    """Five samples per region: past the default min_samples, and past the plan's early EMA weight (0.5)."""
    for region, latency in latencies.items():
        bench.sample(region, latency, times=5)
    return bench.evaluate()


# -- plain --------------------------------------------------------------------------------------------------------


def test_plain_ranking_is_the_plan_sort_and_ignores_failures() -> None:
    bench = Bench(PlainRanking(), regions=("c", "b", "a", "x"))
    bench.sample("a", 0.05)
    bench.sample("b", 0.03)
    ranking = bench.fail("b", times=5)
    assert ranking.order() == ["b", "a", "c", "x"]
    assert [e.rank for e in ranking.entries] == [1, 2, None, None]
    assert states(ranking)["b"] is RegionState.FAILING


# -- ejection by failures ------------------------------------------------------------------------------------------


def test_failing_leader_yields_at_once_and_is_ejected_after_max_failures() -> None:
    bench = Bench()
    assert warm(bench, a=0.040, b=0.060, c=0.090).order() == ["a", "b", "c"]
    once = bench.fail("a")
    assert once.fastest == "b"  # its latest probe failed: not #1, but still ranked
    assert [(e.region, e.rank) for e in once.ranked()] == [("b", 1), ("a", 2), ("c", 3)]
    twice = bench.fail("a")
    assert twice.order() == ["b", "c", "a"]
    assert twice.entries[-1].rank is None and states(twice)["a"] is RegionState.FAILING


def test_without_yield_the_leader_keeps_first_place_until_ejected() -> None:
    bench = Bench(TrustedRanking(INTERVAL, leader_yields_on_failure=False))
    warm(bench, a=0.040, b=0.060)
    assert bench.fail("a").fastest == "a"
    assert bench.fail("a").fastest == "b"


def test_all_ranked_regions_failing_once_keeps_a_leader() -> None:
    bench = Bench()
    warm(bench, a=0.040, b=0.060)
    bench.fail("b")
    assert bench.fail("a").fastest == "a"  # nobody answered its latest probe: no reason to move


# -- staleness ---------------------------------------------------------------------------------------------------


def test_a_region_without_samples_for_longer_than_ttl_goes_stale_on_a_tick() -> None:
    bench = Bench()  # ttl = 3 * 30 s
    warm(bench, a=0.040, b=0.060)
    bench.advance(89.0)
    bench.sample("b", 0.060)
    assert bench.evaluate().fastest == "a"
    bench.advance(1.0)
    assert states(bench.evaluate())["a"] is RegionState.HEALTHY  # exactly ttl old is still fresh
    bench.advance(0.5)
    ranking = bench.evaluate()  # a clock tick: no new result
    assert states(ranking)["a"] is RegionState.STALE and ranking.order() == ["b", "a", "c"]
    assert bench.sample("a", 0.040).fastest == "a"  # one fresh sample brings it back


def test_target_state_ticks_make_a_silent_region_stale() -> None:
    clock = Clock()
    tracker = RegionLatencyTracker(clock=clock, save_interval=0)
    state = TargetState(TargetInfo("t", "s", "tcp"), ["a", "b"], tracker, TrustedRanking(INTERVAL), clock=clock)
    for _ in range(3):
        state.record("a", ProbeResult(latency=0.04))
        state.record("b", ProbeResult(latency=0.06))
    assert state.snapshot().ranking.fastest == "a"
    clock.now += 60.0
    state.record("b", ProbeResult(latency=0.06))
    clock.now += 31.0
    generation = state.snapshot().generation
    state.reevaluate()
    snap = state.snapshot()
    assert snap.ranking.fastest == "b" and snap.generation == generation + 1
    state.reevaluate()
    assert state.snapshot().generation == generation + 1  # unchanged ranking: nothing republished


def test_a_tick_that_cannot_change_the_ranking_gets_the_same_one_and_one_that_can_does_not() -> None:
    """Ticks between results (the same tracker snapshot) are answered from the last evaluation until a region's
    ttl can have run out; from then on they evaluate, and the region goes stale exactly on time."""
    bench = Bench()  # ttl = 3 * 30 s
    warm(bench, a=0.040, b=0.060)
    bench.advance(89.0)
    bench.sample("b", 0.060)
    snapshot = bench.tracker.snapshot()
    first = bench.policy.evaluate(snapshot, bench.regions, bench.clock.now)
    for later in (0.5, 0.9, 0.998):
        assert bench.policy.evaluate(snapshot, bench.regions, bench.clock.now + later) is first
    assert states(bench.policy.evaluate(snapshot, bench.regions, bench.clock.now + 1.0))["a"] is RegionState.HEALTHY
    stale = bench.policy.evaluate(snapshot, bench.regions, bench.clock.now + 1.001)
    assert states(stale)["a"] is RegionState.STALE and stale.fastest == "b"
    assert bench.policy.evaluate(snapshot, bench.regions, bench.clock.now) is not stale  # time went back: evaluated


def test_an_ejected_region_returns_on_a_tick_at_the_end_of_its_back_off() -> None:
    bench = Bench()  # base_ejection = 1 interval
    warm(bench, a=0.040, b=0.060)
    eject(bench)
    bench.advance(5.0)
    assert states(bench.sample("a", 0.040))["a"] is RegionState.FAILING
    snapshot = bench.tracker.snapshot()
    failed_at = bench.clock.now - 5.0
    for at in (failed_at + 10.0, failed_at + 29.99):
        assert states(bench.policy.evaluate(snapshot, bench.regions, at))["a"] is RegionState.FAILING
    assert bench.policy.evaluate(snapshot, bench.regions, failed_at + 30.0).fastest == "a"


# -- return and back-off ------------------------------------------------------------------------------------------


def eject(bench: Bench, region: str = "a") -> None:
    bench.fail(region, times=2)
    assert states(bench.evaluate())[region] is RegionState.FAILING


def test_an_ejected_region_returns_after_answering_for_its_back_off() -> None:
    bench = Bench()  # base_ejection = 1 interval
    warm(bench, a=0.040, b=0.060)
    eject(bench)
    bench.advance(29.0)
    assert states(bench.sample("a", 0.040))["a"] is RegionState.FAILING  # answered, but too soon
    bench.advance(1.0)
    assert bench.evaluate().fastest == "a"


def test_back_off_grows_with_each_ejection_up_to_the_cap() -> None:
    policy = TrustedRanking(INTERVAL, base_ejection=30.0, max_ejection=75.0)
    bench = Bench(policy)
    warm(bench, a=0.040, b=0.060)
    for expected in (30.0, 60.0, 75.0, 75.0):
        eject(bench)
        assert policy.backoff("a") == expected
        bench.sample("a", 0.040)
        bench.advance(expected - 1.0)
        assert states(bench.evaluate())["a"] is RegionState.FAILING
        bench.advance(1.0)
        assert states(bench.evaluate())["a"] is RegionState.HEALTHY


def test_a_failure_during_the_back_off_restarts_it() -> None:
    bench = Bench()
    warm(bench, a=0.040, b=0.060)
    eject(bench)
    bench.advance(20.0)
    bench.sample("a", 0.040)
    bench.fail("a")  # one failure (not an ejection's worth) while out
    bench.advance(20.0)
    bench.sample("a", 0.040)
    bench.advance(9.0)
    assert states(bench.evaluate())["a"] is RegionState.FAILING  # clean for 29 s only
    bench.advance(1.0)
    assert states(bench.evaluate())["a"] is RegionState.HEALTHY


def test_ejections_are_forgiven_after_long_health() -> None:
    policy = TrustedRanking(INTERVAL, base_ejection=30.0, max_ejection=300.0)
    bench = Bench(policy)
    warm(bench, a=0.040, b=0.060)
    backoffs = []
    for _ in range(2):
        eject(bench)
        backoffs.append(policy.backoff("a"))
        bench.sample("a", 0.040)
        bench.advance(backoffs[-1])
        bench.evaluate()
    assert backoffs == [30.0, 60.0] and policy.backoff("a") == 0.0  # back in
    bench.advance(600.0)  # two max_ejection periods of health
    bench.sample("a", 0.040)
    eject(bench)
    assert policy.backoff("a") == 30.0


# -- cold start -----------------------------------------------------------------------------------------------------


def test_a_region_is_ranked_only_after_min_samples() -> None:
    bench = Bench()
    bench.sample("a", 0.040, times=3)
    ranking = bench.sample("b", 0.010, times=2)
    assert ranking.order() == ["a", "b", "c"]
    assert states(ranking) == {"a": RegionState.HEALTHY, "b": RegionState.UNMEASURED, "c": RegionState.UNMEASURED}
    assert bench.sample("b", 0.010).order()[0] == "b"  # far ahead: takes #1 at once


def test_cached_samples_count_towards_min_samples() -> None:
    clock = Clock()
    cache = MemoryCache()
    cache.set(CACHE_KEY, {"metrics": {"a": 0.04, "b": 0.02}, "counts": {"a": 7, "b": 1},
                          "updated_at": clock.now, "last_sample_at": {"a": clock.now - 10, "b": clock.now - 10}})
    tracker = RegionLatencyTracker(cache=cache, clock=clock, save_interval=0)
    ranking = TrustedRanking(INTERVAL).evaluate(tracker.snapshot(), ("a", "b"), clock.now)
    assert ranking.fastest == "a" and states(ranking)["b"] is RegionState.UNMEASURED
    clock.now += 3 * INTERVAL  # the cached sample is too old by now
    ranking = TrustedRanking(INTERVAL).evaluate(tracker.snapshot(), ("a", "b"), clock.now)
    assert states(ranking)["a"] is RegionState.STALE


# -- order of the unranked ------------------------------------------------------------------------------------------


def test_unranked_regions_follow_stale_then_unmeasured_then_failing() -> None:
    regions = ("f2", "u1", "s1", "h", "f1", "s2", "u0", "n")
    bench = Bench(TrustedRanking(INTERVAL, min_samples=2), regions=regions)
    for region, latency in (("s1", 0.09), ("s2", 0.05), ("f1", 0.08), ("f2", 0.01)):
        bench.sample(region, latency, times=2)
    bench.advance(100.0)
    bench.sample("h", 0.2, times=2)
    bench.sample("u1", 0.03)
    bench.sample("u0", 0.07)
    bench.fail("f1", times=2)
    ranking = bench.fail("f2", times=2)
    assert ranking.order() == ["h", "s2", "s1", "u1", "u0", "n", "f2", "f1"]
    assert [e.state.value[0] for e in ranking.entries] == list("hssuuuff")
    assert [e.rank for e in ranking.entries] == [1, None, None, None, None, None, None, None]


# -- hysteresis of #1 -----------------------------------------------------------------------------------------------


def test_a_challenger_inside_the_margin_does_not_take_first_place() -> None:
    bench = Bench()  # margins: 5 % and 4 ms
    warm(bench, a=0.050, b=0.052, c=0.090)
    ranking = bench.round(b=0.045)  # b's EMA 0.0499: a hair ahead of a
    assert ranking.order() == ["a", "b", "c"]
    for _ in range(10):
        ranking = bench.round(a=0.050, b=0.047)
    assert ranking.fastest == "a"
    assert ranking.margin == pytest.approx(0.047 - 0.050, abs=2e-4)  # negative: #1 is trailing within the margin


def test_ranks_below_first_follow_the_ema() -> None:
    bench = Bench()
    warm(bench, a=0.050, b=0.070, c=0.071)
    assert bench.sample("c", 0.060).order() == ["a", "c", "b"]  # EMA 67.7 ms: no margin below #1


def test_a_clear_lead_switches_first_place() -> None:
    bench = Bench()
    warm(bench, a=0.050, b=0.062)
    assert bench.sample("a", 0.100).fastest == "a"  # EMA 65 ms vs 62 ms: a lead of 3 ms < 4 ms
    assert bench.sample("a", 0.100).fastest == "b"  # EMA 75.5 ms: both margins passed


def test_switch_after_counts_evaluations_with_new_information_only() -> None:
    bench = Bench(TrustedRanking(INTERVAL, switch_after=3))
    warm(bench, a=0.050, b=0.060)
    assert bench.sample("b", 0.001, times=2).fastest == "a"  # leading from the first of these: 2 evaluations
    for _ in range(5):
        bench.advance(1.0)
        assert bench.evaluate().fastest == "a"  # clock ticks bring nothing new
    assert bench.sample("c", 0.2).fastest == "a"  # news about a third region does not count
    assert bench.sample("a", 0.050).fastest == "b"  # the third evaluation with news about the pair


def test_a_lapse_resets_the_streak() -> None:
    bench = Bench(TrustedRanking(INTERVAL, switch_after=2, margin_relative=0.0, margin_absolute=0.0))
    warm(bench, a=0.050, b=0.051)
    assert bench.sample("b", 0.040).fastest == "a"  # lead 1/2
    assert bench.sample("a", 0.040).fastest == "a"  # a is ahead again: the streak ends
    assert bench.sample("b", 0.030).fastest == "a"  # lead 1/2 again
    assert bench.sample("b", 0.030).fastest == "b"


def test_margins_are_both_required() -> None:
    relative_only = Bench(TrustedRanking(INTERVAL, margin_relative=0.05, margin_absolute=0.0))
    warm(relative_only, a=0.010, b=0.012)
    assert relative_only.sample("b", 0.005, times=3).fastest == "b"  # EMA 7.4 ms: lead < 4 ms but > 5 %
    absolute_too = Bench(TrustedRanking(INTERVAL, margin_relative=0.05, margin_absolute=0.004))
    warm(absolute_too, a=0.010, b=0.012)
    assert absolute_too.sample("b", 0.005, times=3).fastest == "a"


def test_incumbent_that_goes_stale_is_replaced_without_waiting() -> None:
    bench = Bench(TrustedRanking(INTERVAL, switch_after=5))
    warm(bench, a=0.050, b=0.051)
    bench.advance(91.0)
    bench.sample("b", 0.051)
    assert bench.evaluate().fastest == "b"


def test_margin_of_the_ranking() -> None:
    bench = Bench()
    warm(bench, a=0.040)
    assert bench.evaluate().margin is None
    assert warm(bench, b=0.065).margin == pytest.approx(0.025)


# -- the invariant: healthy, fresh, zero margins == the plan's sort ---------------------------------------------------

NAMES = st.lists(st.sampled_from(["us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "sa-east-1"]),
                 min_size=1, max_size=5, unique=True)


@settings(max_examples=150, deadline=None)
@given(regions=NAMES, data=st.data())
def test_with_everything_healthy_and_zero_margins_the_order_is_the_plan_sort(regions, data) -> None:
    policy = TrustedRanking(INTERVAL, min_samples=1, margin_relative=0.0, margin_absolute=0.0, switch_after=1)
    bench = Bench(policy, regions=tuple(regions))
    updates = data.draw(st.lists(st.tuples(st.sampled_from(regions), st.sampled_from([0.01, 0.02, 0.03, 0.5])),
                                 max_size=30))
    for region, latency in updates:
        bench.advance(1.0)
        ranking = bench.sample(region, latency)
        assert ranking.order() == bench.tracker.get_sorted_regions(regions)
        ranked = [e.region for e in ranking.ranked()]
        assert ranked == [r for r in ranking.order() if bench.tracker.get_latency(r) is not None]


# -- configuration --------------------------------------------------------------------------------------------------


def policy(settings_: dict[str, object], interval: float) -> TrustedRanking | PlainRanking:
    built = policy_for(RankingSettings.model_validate(settings_), interval)
    assert isinstance(built, TrustedRanking | PlainRanking)
    return built


def test_default_policy_is_trusted_with_interval_relative_defaults() -> None:
    trusted = policy({}, interval=20.0)
    assert isinstance(trusted, TrustedRanking)
    limits, chosen = trusted.limits, trusted.settings
    assert (limits.ttl, limits.base_ejection, limits.max_ejection) == (60.0, 20.0, 200.0)
    assert (chosen.max_failures, chosen.min_samples, chosen.switch_after) == (2, 3, 1)
    assert (chosen.margin_relative, chosen.margin_absolute) == (0.05, 0.004)
    assert isinstance(policy({"policy": "plain"}, interval=20.0), PlainRanking)


def test_settings_take_durations() -> None:
    trusted = policy({"ttl": "2m", "margin_absolute": "3ms", "base_ejection": 45, "max_ejection": "1h",
                      "switch_after": 2, "leader_yields_on_failure": False}, interval=30.0)
    assert isinstance(trusted, TrustedRanking)
    limits = trusted.limits
    assert (limits.ttl, trusted.settings.margin_absolute, limits.base_ejection, limits.max_ejection) == (
        120, 0.003, 45, 3600)
    assert trusted.settings.switch_after == 2 and trusted.settings.leader_yields_on_failure is False


def test_max_ejection_default_is_never_below_base_ejection() -> None:
    trusted = policy({"base_ejection": "10m"}, interval=30.0)
    assert isinstance(trusted, TrustedRanking) and trusted.limits.max_ejection == 600.0


def test_keyword_settings_override_the_given_ones() -> None:
    base = RankingSettings.model_validate({"switch_after": 3, "ttl": "5m"})
    trusted = TrustedRanking(30.0, base, min_samples=1)
    assert (trusted.settings.switch_after, trusted.settings.min_samples, trusted.limits.ttl) == (3, 1, 300.0)
    with pytest.raises(ValidationError):
        TrustedRanking(30.0, max_failures=0)


@pytest.mark.parametrize(("settings_", "field", "message"), [
    ({"ttl": "30s"}, "ttl", "ranking.ttl: must be a finite time > the probe interval (30s)"),
    ({"base_ejection": 60, "max_ejection": 30}, "max_ejection",
     "ranking.max_ejection: must be a finite time >= base_ejection"),
    ({"max_ejection": 20}, "max_ejection", "ranking.max_ejection: must be a finite time >= base_ejection"),
])
def test_settings_that_do_not_fit_the_interval(settings_: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(RankingSettingError) as caught:
        RankingSettings.model_validate(settings_).limits(30.0)
    assert (caught.value.field, str(caught.value)) == (field, message)
    with pytest.raises(RankingSettingError):
        TrustedRanking(30.0, RankingSettings.model_validate(settings_))


def test_settings_are_hashable_values_the_policy_identity() -> None:
    """A reload keeps a target's policy when its settings compare equal: the model is the identity."""
    assert RankingSettings.model_validate({"ttl": "2m"}) == RankingSettings.model_validate({"ttl": 120})
    assert hash(RankingSettings.model_validate({"ttl": "2m"})) == hash(RankingSettings(ttl=120.0))
    assert RankingSettings() != RankingSettings(min_samples=4)


def test_settings_are_frozen() -> None:
    settings_ = RankingSettings()
    with pytest.raises(ValidationError):
        settings_.max_failures = 5  # type: ignore[misc]


def test_failure_results_through_target_state_eject() -> None:
    clock = Clock()
    tracker = RegionLatencyTracker(clock=clock, save_interval=0)
    state = TargetState(TargetInfo("t", "s", "tcp"), ["a", "b"], tracker, TrustedRanking(INTERVAL), clock=clock)
    for _ in range(3):
        state.record("a", ProbeResult(latency=0.04))
        state.record("b", ProbeResult(latency=0.06))
    state.record("a", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer"))
    state.record("a", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer"))
    ranking = state.snapshot().ranking
    assert ranking.order() == ["b", "a"] and states(ranking)["a"] is RegionState.FAILING
