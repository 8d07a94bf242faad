"""The trace simulator (virtual clock, ground truth, metrics) and the ranking goals on short traces.

These are logic checks on a virtual clock, not wall-clock timings: the same seed gives the same numbers.
"""

from __future__ import annotations

import itertools

import pytest

from region_latency_devkit.tracesim import (
    HOUR,
    SCHEDULER_JITTER,
    Event,
    Outage,
    RegionTrace,
    Scenario,
    Timeline,
    measure,
    measure_run,
    simulate,
    standard_scenarios,
)

INTERVAL = 30.0
TIMEOUT = 5.0
MAX_GAP = INTERVAL * (1 + 2 * SCHEDULER_JITTER)  # the longest gap between two probes of one region


def by_probe(k: int) -> float:
    """The latest the k-th probe after any moment can answer: k slots, one slot's jitter each way, 0.2 s latency."""
    return k * INTERVAL + 2 * SCHEDULER_JITTER * INTERVAL + 0.2


@pytest.fixture(scope="module")
def short() -> dict[str, Scenario]:
    return {s.name: s for s in standard_scenarios(hours=3.0, interval=INTERVAL, timeout=TIMEOUT)}


def run(scenario: Scenario, seed: int = 0):
    return measure_run(scenario, simulate(scenario, seed=seed, tick=1.0))


# -- ground truth and bookkeeping -----------------------------------------------------------------------------------


def test_trace_ground_truth() -> None:
    trace = RegionTrace(levels=((0.0, 0.05), (100.0, 0.1)), outages=(Outage(200.0, 300.0),))
    assert [trace.latency_at(t) for t in (0.0, 99.9, 100.0, 500.0)] == [0.05, 0.05, 0.1, 0.1]
    assert trace.outage_at(199.9) is None and trace.outage_at(200.0) is not None and trace.outage_at(300.0) is None
    scenario = Scenario("s", "", {"a": trace, "b": RegionTrace(levels=((0.0, 0.05),))}, duration=400.0)
    assert scenario.truly_fastest(50.0) == {"a", "b"}  # a tie: both are truly fastest
    assert scenario.truly_fastest(150.0) == {"b"}


def test_metrics_of_a_hand_made_timeline() -> None:
    scenario = Scenario("s", "", {
        "a": RegionTrace(levels=((0.0, 0.05),), outages=(Outage(100.0, 200.0),)),
        "b": RegionTrace(levels=((0.0, 0.06),)),
    }, duration=400.0, events=(Event(100.0, "leave", "dies", "a", 200.0), Event(200.0, "follow", "back", "a", 400.0)))
    timeline = Timeline()
    for t, region in ((0.0, None), (10.0, "a"), (130.0, "b"), (250.0, "a")):
        timeline.note(t, region)
    timeline.note(260.0, "a")  # no change: not a new point
    assert timeline.times == [0.0, 10.0, 130.0, 250.0] and timeline.swaps() == 2
    metrics = measure(scenario, timeline, {"a": (125.0,), "b": ()})
    # wrong: 0-10 (nothing published), 100-130 (a is down), 200-250 (b while a is back)
    assert metrics.truly_fastest == pytest.approx((400 - 10 - 30 - 50) / 400)
    assert metrics.leader_down == pytest.approx(30 / 400)
    assert metrics.reactions == {"dies": (30.0,), "back": (50.0,)}
    assert metrics.after_first_failure == {"dies": (5.0,)}
    assert metrics.swaps_per_hour == pytest.approx(2 / (400 / HOUR))


def test_same_seed_same_run_other_seed_other_run(short: dict[str, Scenario]) -> None:
    scenario = short["close pair"]
    first, again, other = (simulate(scenario, seed=s, tick=5.0) for s in (7, 7, 8))
    assert first == again
    assert first.timelines["plain"] != other.timelines["plain"]


def test_probes_keep_the_interval_and_failures_arrive_after_the_timeout(short: dict[str, Scenario]) -> None:
    scenario = short["dead #1"]
    failures = simulate(scenario, seed=3, tick=5.0).failures
    assert failures["b"] == () and failures["c"] == ()
    outage = scenario.traces["a"].outages[0]
    during = [t for t in failures["a"] if outage.start <= t < outage.end + TIMEOUT]
    assert len(during) == pytest.approx(outage.end / INTERVAL - outage.start / INTERVAL, abs=1)
    assert all(b - a <= MAX_GAP for a, b in itertools.pairwise(during))


# -- the goals, on short traces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_a_dead_leader_leaves_first_place_at_its_first_failed_probe(short: dict[str, Scenario], seed: int) -> None:
    metrics = run(short["dead #1"], seed)
    trusted, plain = metrics["trusted"], metrics["plain"]
    assert all(r is not None and r <= by_probe(1) + TIMEOUT for r in trusted.reactions["dead: leaves #1"])
    assert all(r == 0.0 for r in trusted.after_first_failure["dead: leaves #1"])
    assert plain.reactions["dead: leaves #1"] == (None,)  # the plan's sort never lets go
    assert trusted.leader_down < plain.leader_down / 10


def test_a_silent_leader_leaves_first_place_once_stale(short: dict[str, Scenario]) -> None:
    metrics = run(short["silent #1"])
    ttl = 3 * INTERVAL
    assert all(r is not None and r <= ttl + 1.0 for r in metrics["trusted"].reactions["silent: leaves #1"])
    assert metrics["plain"].reactions["silent: leaves #1"] == (None,)


@pytest.mark.parametrize("name", ["close pair", "equal pair"])
def test_a_pair_within_noise_swaps_at_most_once_an_hour(short: dict[str, Scenario], name: str) -> None:
    for seed in (0, 1):
        metrics = run(short[name], seed)
        assert metrics["trusted"].swaps_per_hour <= 1.0
        assert metrics["plain"].swaps_per_hour > 10.0  # the plain sort flaps on noise


def test_a_2x_slower_leader_is_followed_within_three_probe_rounds(short: dict[str, Scenario]) -> None:
    for seed in (0, 1):
        reactions = run(short["step 2x"], seed)["trusted"].reactions
        assert all(r is not None and r <= by_probe(3) for r in reactions["2x slower"])
        assert all(r is not None for r in reactions["2x faster"])  # followed too, later: the EMA lags
