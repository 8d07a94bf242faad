"""The collector's output: families, labels, values, ranks and histogram, parsed back."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from region_latency.export.prometheus import build_registry
from region_latency.metric_options import ALL_METRICS, MetricsOptions
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

# The histogram's buckets as they were before issue 15 (19 bounds): a target's own buckets.
FINE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
                2.0, 5.0)


def make_state(metrics: MetricsOptions = ALL_METRICS) -> TargetState:
    state = TargetState(TargetInfo("bedrock-https", "bedrock", "https"), ["us-east-1", "eu-west-1", "sa-east-1"],
                        RegionLatencyTracker(), PlainRanking(), clock=lambda: 1000.0, metrics=metrics)
    for latency in (0.09, 0.08):
        state.record("us-east-1", ProbeResult(latency, {"connect": 0.04, "ttfb": latency}, status=403))
    state.record("eu-west-1", ProbeResult(0.02, {"connect": 0.01, "ttfb": 0.02}, status=403))
    state.record("sa-east-1", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer"))
    return state


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def by_region(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels["region"]: value for labels, value in samples}


def test_families_and_values() -> None:
    state = make_state()
    text = generate_latest(build_registry(lambda: [state.snapshot()])).decode()
    m = parsed(text)
    assert by_region(m["region_latency_ema_seconds"]) == pytest.approx({"us-east-1": 0.085, "eu-west-1": 0.02})
    assert by_region(m["region_latency_samples"]) == {"us-east-1": 2, "eu-west-1": 1, "sa-east-1": 0}
    assert by_region(m["region_latency_rank"]) == {"eu-west-1": 1, "us-east-1": 2}
    assert {(lb["rank"], lb["region"]) for lb, _ in m["region_latency_ranking_info"]} == {
        ("1", "eu-west-1"), ("2", "us-east-1")}
    assert by_region(m["region_latency_probe_success"]) == {"us-east-1": 1, "eu-west-1": 1, "sa-east-1": 0}
    assert by_region(m["region_latency_probes_total"]) == {"us-east-1": 2, "eu-west-1": 1, "sa-east-1": 1}
    assert [(lb["region"], lb["reason"], v) for lb, v in m["region_latency_probe_failures_total"]] == [
        ("sa-east-1", "timeout", 1)]
    assert by_region(m["region_latency_consecutive_failures"])["sa-east-1"] == 1
    states = {(lb["region"], lb["state"]) for lb, v in m["region_latency_region_state"] if v == 1}
    assert states == {("us-east-1", "healthy"), ("eu-west-1", "healthy"), ("sa-east-1", "unmeasured")}
    assert m["region_latency_rank_margin_seconds"][0][1] == pytest.approx(0.065)
    assert by_region(m["region_latency_last_probe_timestamp_seconds"]) == dict.fromkeys(
        ["us-east-1", "eu-west-1", "sa-east-1"], 1000.0)
    assert by_region(m["region_latency_probe_http_status_code"]) == {"us-east-1": 403, "eu-west-1": 403}
    phases = {(lb["region"], lb["phase"]): v for lb, v in m["region_latency_probe_duration_seconds"]}
    assert phases[("us-east-1", "ttfb")] == 0.08
    buckets = {lb["le"]: v for lb, v in m["region_latency_sample_seconds_bucket"] if lb["region"] == "us-east-1"}
    assert buckets["0.05"] == 0 and buckets["0.1"] == 2 and buckets["+Inf"] == 2
    assert by_region(m["region_latency_sample_seconds_count"]) == {"us-east-1": 2, "eu-west-1": 1}
    assert m["region_latency_build_info"][0][0]["version"]
    for labels, _ in m["region_latency_samples"]:
        assert labels.keys() == {"target", "service", "probe", "region"}


def test_defaults_keep_to_the_budget() -> None:
    """By default: only the current state's series, #1 alone in ranking_info, no status or last-probe time, the
    default phases, five bucket bounds (docs/METRICS.md: the cardinality budget)."""
    state = make_state(MetricsOptions())
    m = parsed(generate_latest(build_registry(lambda: [state.snapshot()])).decode())
    states = [(lb["region"], lb["state"], v) for lb, v in m["region_latency_region_state"]]
    assert states == [("us-east-1", "healthy", 1), ("eu-west-1", "healthy", 1), ("sa-east-1", "unmeasured", 1)]
    assert [(lb["rank"], lb["region"]) for lb, _ in m["region_latency_ranking_info"]] == [("1", "eu-west-1")]
    assert "region_latency_probe_http_status_code" not in m
    assert "region_latency_last_probe_timestamp_seconds" not in m
    assert {lb["phase"] for lb, _ in m["region_latency_probe_duration_seconds"]} == {"connect", "ttfb"}
    assert [lb["le"] for lb, _ in m["region_latency_sample_seconds_bucket"] if lb["region"] == "us-east-1"] == [
        "0.025", "0.05", "0.1", "0.25", "0.5", "+Inf"]


def test_options_turn_families_off() -> None:
    state = make_state(MetricsOptions.model_validate({"histogram": False, "phases": False, "ranking_info": 0}))
    m = parsed(generate_latest(build_registry(lambda: [state.snapshot()])).decode())
    for name in ("region_latency_sample_seconds_bucket", "region_latency_probe_duration_seconds",
                 "region_latency_ranking_info"):
        assert name not in m
    assert by_region(m["region_latency_ema_seconds"]) == pytest.approx({"us-east-1": 0.085, "eu-west-1": 0.02})


def test_snapshot_is_reused_until_the_next_update() -> None:
    state = make_state()
    first = state.snapshot()
    assert state.snapshot() is first
    state.record("eu-west-1", ProbeResult(0.03))
    second = state.snapshot()
    assert second is not first and second.generation == first.generation + 1
    assert first.tracker.regions["eu-west-1"].samples == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_output_passes_promtool() -> None:
    text = generate_latest(build_registry(lambda: [make_state().snapshot()])).decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr


def test_a_sample_on_a_bucket_bound_counts_in_that_bucket() -> None:
    """`le` is less than or equal: 0.1 s counts in le="0.1", 5.0 s (the last finite bound) in le="5.0"; a target's
    own buckets."""
    state = TargetState(TargetInfo("t", "svc", "tcp"), ["on-bounds"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0, metrics=MetricsOptions.model_validate({"histogram": FINE_BUCKETS}))
    for latency in (0.001, 0.1, 0.1, 5.0, 5.000001):
        state.record("on-bounds", ProbeResult(latency, {"connect": latency}))
    m = parsed(generate_latest(build_registry(lambda: [state.snapshot()])).decode())
    buckets = {lb["le"]: v for lb, v in m["region_latency_sample_seconds_bucket"]}
    assert {le: buckets[le] for le in ("0.001", "0.0025", "0.075", "0.1", "0.15", "2.0", "5.0", "+Inf")} == {
        "0.001": 1, "0.0025": 1, "0.075": 1, "0.1": 3, "0.15": 3, "2.0": 3, "5.0": 4, "+Inf": 5}
    assert by_region(m["region_latency_sample_seconds_count"]) == {"on-bounds": 5}
    assert by_region(m["region_latency_sample_seconds_sum"]) == {"on-bounds": pytest.approx(10.201001)}
