"""The family table (export/families.py): what every publisher relies on, checked once for every family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from region_latency.export.families import TARGET_FAMILIES, Family, HistogramFamily, Kind, Scope
from region_latency.export.prometheus import RegionLatencyCollector
from region_latency.metric_options import ALL_METRICS
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import TrustedRanking
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.tracker import RegionLatencyTracker

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"


def busy_snapshot() -> TargetSnapshot:
    """Every family has series (every optional one on): ranked and unranked regions, failures with reasons,
    phases, statuses, and two regions whose round trips sum to less than light needs between Virginia and Sydney
    (untrusted)."""
    state = TargetState(TargetInfo("t", "svc", "https"), ["us-east-1", "ap-southeast-2", "c"],
                        RegionLatencyTracker(), TrustedRanking(30.0, min_samples=2), clock=lambda: 1000.0,
                        metrics=ALL_METRICS)
    for region, latency in (("us-east-1", 0.05), ("ap-southeast-2", 0.02), ("us-east-1", 0.04),
                            ("ap-southeast-2", 0.03)):
        state.record(region, ProbeResult(latency, {"dns": 0.001, "connect": 0.01, "ttfb": latency}, status=403))
    state.record("c", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer"))
    state.record("c", ProbeResult.failure(ErrorKind.TLS, "bad cert"))
    return state.snapshot()


def test_names_are_unique_namespaced_and_documented() -> None:
    names = [family.name for family in TARGET_FAMILIES]
    assert len(set(names)) == len(names)
    documented = set(re.findall(r"^\| `(region_latency_[a-z_]+)` \|", METRICS_DOC.read_text(), re.MULTILINE))
    assert set(names) <= documented
    for family in TARGET_FAMILIES:
        assert family.help.endswith(".") and "\n" not in family.help


@pytest.mark.parametrize("family", TARGET_FAMILIES, ids=lambda family: family.name)
def test_samples_match_the_declared_scope_and_labels(family: Family[TargetSnapshot] | HistogramFamily[
        TargetSnapshot]) -> None:
    snap = busy_snapshot()
    samples = list(family.read(snap))
    assert samples, f"{family.name} has no series in a busy snapshot"
    for region, extra, _ in samples:
        assert (region is not None) == (family.scope is Scope.REGION)
        assert region is None or region in snap.regions
        assert len(extra) == len(family.extra_labels)


def test_the_collector_describes_the_table() -> None:
    described = [(metric.name, metric.type, metric.documentation)
                 for metric in RegionLatencyCollector(lambda: []).describe()]
    assert described == [(family.name.removesuffix("_total"), family.kind.value, family.help)
                         for family in TARGET_FAMILIES]


def test_a_family_that_contradicts_its_name_is_refused() -> None:
    with pytest.raises(ValueError, match="_total"):
        Family(name="x_probes", kind=Kind.COUNTER, unit="{probe}", help="x.", scope=Scope.REGION, read=lambda _: ())
    with pytest.raises(ValueError, match="_seconds"):
        Family(name="x_delay", kind=Kind.GAUGE, unit="s", help="x.", scope=Scope.REGION, read=lambda _: ())
    with pytest.raises(ValueError, match="HistogramFamily"):
        Family(name="x_seconds", kind=Kind.HISTOGRAM, unit="s", help="x.", scope=Scope.REGION, read=lambda _: ())
