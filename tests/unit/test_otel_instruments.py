"""The OTel instruments derived from the family table: names, units, attribute keys; and the one-call attach
an application uses on its own MeterProvider (region_latency.otel.instrument_tracker)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from region_latency.export.families import TARGET_FAMILIES, AnyFamily, Kind
from region_latency.export.otel import ATTRIBUTE_KEYS, OtlpExporter, attribute_key, instrument_name
from region_latency.otel import TRACKER_FAMILIES, instrument_tracker
from region_latency.otlp_config import OtlpConfig
from region_latency.tracker import RegionLatencyTracker


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """OpenTelemetry's metric -> Prometheus name rule (the specification's compatibility section, as the
    Collector's Prometheus exporters apply it): dots to underscores, the unit's word appended (`s` -> seconds,
    `1` on a gauge -> ratio, `{...}` annotations dropped), `_total` on monotonic sums."""
    out = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    word = {"s": "seconds", "1": "ratio" if kind is Kind.GAUGE else ""}.get(unit, "")
    if word and not out.endswith(f"_{word}"):
        out += f"_{word}"
    return out + ("_total" if kind is Kind.COUNTER else "")


@pytest.mark.parametrize("family", TARGET_FAMILIES, ids=lambda f: f.name)
def test_instrument_names_convert_back_to_the_prometheus_names(family: AnyFamily[Any]) -> None:
    name = instrument_name(family)
    assert re.fullmatch(r"region_latency\.[a-z_]+", name)
    assert not name.endswith(("_total", "_seconds"))
    expected = family.name + ("_ratio" if family.unit == "1" else "")  # documented in docs/METRICS.md
    assert prometheus_name(name, family.unit, family.kind) == expected


def test_attribute_keys_are_distinct_and_semantic_where_one_fits() -> None:
    assert attribute_key("region") == "cloud.region"
    assert attribute_key("service") == "rpc.service"
    assert attribute_key("reason") == "error.type"
    assert attribute_key("something_new") == "region_latency.something_new"
    assert len(set(ATTRIBUTE_KEYS.values())) == len(ATTRIBUTE_KEYS)
    labels = {label for family in TARGET_FAMILIES for label in family.labels}
    assert labels <= set(ATTRIBUTE_KEYS)  # every label of the table has its key chosen, not defaulted


def points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    data = reader.get_metrics_data()
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "region_latency"
            for metric in sm.metrics:
                out[metric.name] = {tuple(sorted(p.attributes.items())): p.value for p in metric.data.data_points}
    return out


def test_instrument_tracker_reports_an_applications_tracker_on_its_own_provider() -> None:
    tracker = RegionLatencyTracker()
    for region, latency in (("us-east-1", 0.120), ("eu-west-1", 0.030), ("us-east-1", 0.100), ("ap-south-1", 0.07)):
        tracker.update_latency(region, latency)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = instrument_tracker(tracker, provider, target="chat", service="bedrock-runtime")
    got = points(reader)
    assert set(got) == {instrument_name(family) for family in TRACKER_FAMILIES}

    def key(region: str) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted({"region_latency.target": "chat", "rpc.service": "bedrock-runtime",
                             "region_latency.probe": "passive", "cloud.region": region}.items()))

    for region in ("us-east-1", "eu-west-1", "ap-south-1"):
        assert got["region_latency.ema"][key(region)] == tracker.get_latency(region)
        assert got["region_latency.samples"][key(region)] == tracker.get_sample_count(region)
    ranks = got["region_latency.rank"]
    order = sorted(ranks, key=ranks.__getitem__)
    assert [dict(k)["cloud.region"] for k in order] == tracker.get_sorted_regions(tracker.regions())
    # a new sample shows at the next collection
    tracker.update_latency("ap-south-1", 0.001)  # EMA 0.07 -> 0.0355 (early alpha 0.5): still behind 0.030
    tracker.update_latency("ap-south-1", 0.001)  # -> 0.01825: first
    assert points(reader)["region_latency.rank"][key("ap-south-1")] == 1
    instruments.detach()
    assert all(not series for series in points(reader).values())


def test_the_exporter_never_touches_the_global_meter_provider() -> None:
    before = metrics.get_meter_provider()
    pushing = OtlpExporter(OtlpConfig(endpoint="http://127.0.0.1:1", timeout=0.5), lambda: [])
    pushing.start()
    pushing.stop(timeout=1)
    assert metrics.get_meter_provider() is before


def test_the_mapping_table_in_the_docs_is_the_derived_one() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "METRICS.md").read_text()
    section = doc[doc.index("## OpenTelemetry"):]
    rows = dict((prom, (otel, unit)) for prom, otel, unit in
                re.findall(r"^\| `(region_latency_\w+)` \| `(region_latency\.\w+)` \| `([^`]+)` \|", section, re.M))
    assert rows == {family.name: (instrument_name(family), family.unit) for family in TARGET_FAMILIES}
    for label, key in ATTRIBUTE_KEYS.items():
        assert f"| `{label}` | `{key}` |" in section


def test_one_collection_reads_one_generation() -> None:
    """Every instrument of one collection shows the same snapshots, even when state changes between callbacks:
    here each call of snapshots() records one more sample first, so per-instrument snapshots would disagree."""
    from region_latency.export.otel import attach
    from region_latency.probes.base import ProbeResult
    from region_latency.state import TargetInfo, TargetSnapshot, TargetState

    state = TargetState(TargetInfo("t", "bedrock-runtime", "https"), ["eu-west-1"], RegionLatencyTracker())

    def snapshots() -> list[TargetSnapshot]:
        state.record("eu-west-1", ProbeResult(latency=0.01, phases={"ttfb": 0.01}))
        return [state.snapshot()]

    reader = InMemoryMetricReader()
    attach(MeterProvider(metric_readers=[reader]), snapshots)
    for collection in (1, 2):
        got = points(reader)
        (samples,) = got["region_latency.samples"].values()
        (probes,) = got["region_latency.probes"].values()
        assert samples == probes == collection
