"""/regions (routes.regions_document): the trust check, which clock timed each connect, what a target measures."""

from __future__ import annotations

import json

import pytest

from region_latency.export.routes import regions_document
from region_latency.probes.base import ConnectTiming, ProbeResult
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker
from region_latency.trust import min_round_trip


def state_with(latencies: dict[str, float]) -> TargetState:
    state = TargetState(TargetInfo("t", "bedrock-runtime", "tcp"), list(latencies), RegionLatencyTracker(),
                        clock=lambda: 1000.0)
    for region, latency in latencies.items():
        state.record(region, ProbeResult(latency, {"connect": latency}, connect_timing=ConnectTiming.KERNEL))
    return state


def test_a_proxy_answering_for_every_region_is_shown_untrusted() -> None:
    state = state_with({"us-east-1": 0.001, "ap-southeast-2": 0.0012, "local-1": 0.0005})
    (target,) = regions_document([state.snapshot()])["targets"]
    trust = target["trust"]
    assert trust["trusted"] is False
    assert trust["pairs_checked"] == 1  # local-1 is not in the table: skipped
    assert trust["violation"] == {
        "reason": "faster_than_light", "region_a": "us-east-1", "region_b": "ap-southeast-2",
        "measured_seconds": pytest.approx(0.0022),
        "min_round_trip_seconds": min_round_trip("us-east-1", "ap-southeast-2")}
    assert {r["last_probe"]["connect_timing"] for r in target["regions"]} == {"kernel"}
    json.dumps(regions_document([state.snapshot()]), allow_nan=False)


def test_real_round_trips_are_shown_trusted() -> None:
    state = state_with({"us-east-1": 0.0008, "eu-west-1": 0.070, "ap-southeast-2": 0.200})
    (target,) = regions_document([state.snapshot()])["targets"]
    assert target["trust"] == {"trusted": True, "pairs_checked": 3, "violation": None}


def test_a_failed_probe_has_no_connect_timing() -> None:
    from region_latency.probes.base import ErrorKind

    state = state_with({})
    state.set_regions(["us-east-1"])
    state.record("us-east-1", ProbeResult.failure(ErrorKind.REFUSED, "refused"))
    (target,) = regions_document([state.snapshot()])["targets"]
    assert target["regions"][0]["last_probe"]["connect_timing"] is None
    assert target["trust"] == {"trusted": True, "pairs_checked": 0, "violation": None}


def test_the_target_says_what_its_latency_measures() -> None:
    state = TargetState(TargetInfo("w", "bedrock-runtime", "https", measure="warm"), [], RegionLatencyTracker())
    (target,) = regions_document([state.snapshot(), state_with({}).snapshot()])["targets"][:1]
    assert target["measure"] == "warm"
    assert regions_document([state_with({}).snapshot()])["targets"][0]["measure"] is None


def test_a_family_unavailable_from_here_is_reported_once_and_is_not_a_failing_region(
        caplog: pytest.LogCaptureFixture) -> None:
    from region_latency.probes.base import ErrorKind
    from region_latency.ranking import RegionState

    state = state_with({"eu-west-1": 0.020})
    state.set_regions(["eu-west-1", "us-east-1"])
    unavailable = ProbeResult.failure(ErrorKind.FAMILY_UNAVAILABLE, "connect: Network is unreachable")
    with caplog.at_level("WARNING", logger="region_latency.state"):
        state.record("us-east-1", unavailable)
        state.record("us-east-1", unavailable)
    assert len([r for r in caplog.records if "not available from here" in r.getMessage()]) == 1
    snap = state.snapshot()
    assert snap.tracker.regions.get("us-east-1") is None  # no failure counted: the tracker never heard of it
    assert snap.failures_total == {}
    assert "us-east-1" not in snap.last_probe
    assert {e.region: e.state for e in snap.ranking.entries}["us-east-1"] is RegionState.UNMEASURED
    regions = {r["region"]: r for r in regions_document([snap])["targets"][0]["regions"]}
    assert regions["us-east-1"]["ip_family_unavailable"] == "connect: Network is unreachable"
    assert regions["eu-west-1"]["ip_family_unavailable"] is None
    state.record("us-east-1", ProbeResult(0.080, {"connect": 0.080}))  # the family works again
    assert state.snapshot().family_unavailable == {}
