"""export/text.py writes exactly what prometheus_client's generate_latest makes of the collector's families.

Both read the same family table (export/families.py), so what these tests hold is the serializer: label blocks,
escaping, number format, order, HELP and TYPE lines."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from region_latency.export.families import Family, HistogramFamily, Kind, Scope
from region_latency.export.prometheus import RegionLatencyCollector, metrics
from region_latency.export.text import TargetText, render, render_targets
from region_latency.metric_options import ALL_METRICS, DEFAULT_METRICS, MetricsOptions
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import PlainRanking, TrustedRanking
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.tracker import RegionLatencyTracker

# The histogram's buckets as they were before issue 15 (19 bounds), as a target's own buckets.
FINE = MetricsOptions.model_validate({"histogram": {"buckets": [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0]}})


def reference(snapshots: list[TargetSnapshot]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegionLatencyCollector(lambda: snapshots))
    return generate_latest(registry).decode()


def test_empty() -> None:
    assert render_targets([]) == reference([])


def test_every_kind_of_series_and_awkward_label_values() -> None:
    clock = [1_764_080_000.25]
    odd = TargetState(TargetInfo('we"ird\\name\nx', "bédrock", "https"), ["us-east-1", "eu-west-1", "ap-south-1",
                                                                          'r"\\'],
                      RegionLatencyTracker(), TrustedRanking(30.0, min_samples=2), clock=lambda: clock[0])
    for latency in (0.09, 0.08, 0.0801):
        odd.record("us-east-1", ProbeResult(latency, {"dns": 0.001, "connect": 0.03, "tls": 0.031, "ttfb": latency,
                                                      "total": 0.2}, status=403))
    odd.record("eu-west-1", ProbeResult(0.02, {"connect": 0.01, "ttfb": 0.02}, status=200))  # 1 sample: unranked
    odd.record("ap-south-1", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer", {"dns": 0.002}))
    odd.record("ap-south-1", ProbeResult.failure(ErrorKind.TLS, "bad cert", status=None))
    odd.record('r"\\', ProbeResult(1e-7, {"connect": 1e-7}))
    odd.record('r"\\', ProbeResult(12345678.5, {"connect": 12345678.5}))
    plain = TargetState(TargetInfo("tcp", "bedrock-runtime", "tcp"), ["us-east-1", "us-west-2"],
                        RegionLatencyTracker(), PlainRanking(), clock=lambda: clock[0])
    plain.record("us-west-2", ProbeResult(0.07, {"connect": 0.07}))
    plain.record("us-east-1", ProbeResult(0.01, {"connect": 0.01}))
    empty = TargetState(TargetInfo("none", "s3", "tcp"), [], RegionLatencyTracker(), PlainRanking())
    snaps = [odd.snapshot(), plain.snapshot(), empty.snapshot()]
    text = render_targets(snaps)
    assert text == reference(snaps)
    assert 'region_latency_rank_margin_seconds{probe="tcp",service="bedrock-runtime",target="tcp"} 0.06' in text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                          st.one_of(st.none(), st.floats(min_value=1e-6, max_value=100.0)),
                          st.sampled_from(list(ErrorKind)),
                          st.one_of(st.none(), st.integers(min_value=100, max_value=599))),
                max_size=30),
       st.booleans(), st.sampled_from([DEFAULT_METRICS, ALL_METRICS, FINE]))
def test_same_text_after_any_results(results: list[tuple[str, float | None, ErrorKind, int | None]],
                                     trusted: bool, metrics: MetricsOptions) -> None:
    """Also the kept writer (TargetText), brought up to date after every result: the same bytes as a writer
    from nothing and as prometheus_client."""
    policy = TrustedRanking(30.0) if trusted else PlainRanking()
    state = TargetState(TargetInfo("t", "svc", "https"), ["a", "b", "c"], RegionLatencyTracker(), policy,
                        clock=lambda: 1000.0, metrics=metrics)
    kept = TargetText()
    for region, latency, error, status in results:
        if latency is None:
            state.record(region, ProbeResult.failure(error, "x", status=status))
        else:
            state.record(region, ProbeResult(latency, {"connect": latency / 2, "ttfb": latency}, status=status))
        kept.update(state.snapshot())
    snaps = [state.snapshot()]
    assert render_targets(snaps) == reference(snaps)
    kept.update(snaps[0])
    assert kept_text([kept]) == render_targets(snaps)


def kept_text(texts: list[TargetText]) -> str:
    """The families laid out from kept per-target parts, as the metrics cache does."""
    from region_latency.export.families import TARGET_FAMILIES
    from region_latency.export.text import header

    return "".join(header(family) + "".join(text.parts[i].decode() for text in texts)
                   for i, family in enumerate(TARGET_FAMILIES))


def test_kept_parts_follow_reloads_of_regions_and_options() -> None:
    """Regions dropped and added, options changed (buckets, phases, states): the kept parts are what a fresh
    writer makes, and an unchanged family keeps its very bytes object (its gzip segment is reused)."""
    state = TargetState(TargetInfo("t", "svc", "https"), ["a", "b"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0)
    kept = TargetText()
    state.record("a", ProbeResult(0.05, {"connect": 0.02, "ttfb": 0.05}, status=200))
    kept.update(state.snapshot())
    target_regions_part = kept.parts[7]
    state.record("a", ProbeResult(0.06, {"connect": 0.02, "ttfb": 0.06}, status=200))
    kept.update(state.snapshot())
    assert kept.parts[7] is target_regions_part
    for change in (lambda: state.set_regions(["b", "c"]), lambda: state.set_metrics(ALL_METRICS),
                   lambda: state.set_metrics(FINE), lambda: state.record("c", ProbeResult(0.2, {"connect": 0.1})),
                   lambda: state.set_regions(["a", "b", "c"])):
        change()
        kept.update(state.snapshot())
        snaps = [state.snapshot()]
        assert kept_text([kept]) == render_targets(snaps) == reference(snaps)


def bound_samples() -> TargetSnapshot:
    """Samples exactly on bucket bounds (0.001, 0.1, 5.0, the last finite one) and just above the last one."""
    state = TargetState(TargetInfo("t", "svc", "tcp"), ["on-bounds"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0, metrics=FINE)
    for latency in (0.001, 0.1, 0.1, 5.0, 5.000001):
        state.record("on-bounds", ProbeResult(latency, {"connect": latency}))
    return state.snapshot()


# `le` means less than or equal: a sample on a bound counts in that bound's bucket (cumulative counts).
ON_BOUNDS = {"0.001": 1, "0.0025": 1, "0.075": 1, "0.1": 3, "0.15": 3, "2.0": 3, "5.0": 4, "+Inf": 5}


def bucket_counts(text: str) -> dict[str, float]:
    return {sample.labels["le"]: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "region_latency_sample_seconds_bucket"}


def test_a_sample_on_a_bucket_bound_counts_in_that_bucket() -> None:
    snaps = [bound_samples()]
    text = render_targets(snaps)
    counts = bucket_counts(text)
    assert {le: counts[le] for le in ON_BOUNDS} == ON_BOUNDS
    assert 'region_latency_sample_seconds_count{probe="tcp",region="on-bounds",service="svc",target="t"} 5.0' in text
    assert text == reference(snaps)


def test_numbers_are_formatted_as_prometheus_client_does() -> None:
    """Whole floats, -0.0, ints past the writer's table of small ints, huge and tiny values."""
    state = TargetState(TargetInfo("t", "svc", "https"), ["r"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0, metrics=ALL_METRICS)
    for _ in range(5000):
        state.record("r", ProbeResult(0.0005, {"connect": 0.0005}))
    state.record("r", ProbeResult(2.0, {"dns": -0.0, "connect": 0.0, "tls": 1e-9, "ttfb": 2.0, "total": 1e22},
                                  status=599))
    snaps = [state.snapshot()]
    text = render_targets(snaps)
    assert 'region_latency_probes_total{probe="https",region="r",service="svc",target="t"} 5001.0' in text
    assert 'region_latency_probe_duration_seconds{phase="dns",probe="https",region="r",service="svc",target="t"} -0.0' \
        in text
    assert text == reference(snaps)


@dataclass(frozen=True)
class Thing:
    """A source other than a target snapshot: what a later table (say, the exporter's own status) reads."""

    name: str
    values: dict[str, float]


def test_any_table_over_any_source() -> None:
    """The serializer takes a table, its sources and their identity labels: a new table needs no new writer."""
    table = (
        Family[Thing](name="demo_values_total", kind=Kind.COUNTER, unit="1", scope=Scope.REGION,
                      help="Back\\slash\nnewline.", extra_labels=("why", "le_not"),
                      read=lambda thing: ((key, ("a\"b", "x\ny"), value) for key, value in thing.values.items())),
        Family[Thing](name="demo_size", kind=Kind.GAUGE, unit="1", scope=Scope.TARGET, help="Size.",
                      read=lambda thing: [(None, (), len(thing.values))]),
        HistogramFamily[Thing](name="demo_wait_seconds", kind=Kind.HISTOGRAM, unit="s", scope=Scope.TARGET,
                               help="Waits.", extra_labels=("kind",), buckets=(0.5, 1.0),
                               read=lambda thing: [(None, ("k",), ((1, 2, 7), 12.25))]),
    )
    things = [Thing('n"1', {"r1": 3.0, "r\\2": -0.0, "r3": 1e-12}), Thing("n2", {})]

    def identity(thing: Thing) -> tuple[str | None, ...]:
        # ip_family is optional: n2 has it (one family of a target with ip_families), n"1 leaves it out
        return thing.name, "svc", "kind", "ipv6" if thing.name == "n2" else None

    class Reference:
        def collect(self) -> object:
            return metrics(table, things, identity)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference())  # type: ignore[arg-type]
    text = render(table, things, identity)
    assert text == generate_latest(registry).decode()
    assert ('demo_wait_seconds_bucket{ip_family="ipv6",kind="k",le="1.0",probe="kind",service="svc",target="n2"} '
            '2.0') in text
    assert 'demo_size{probe="kind",service="svc",target="n\\"1"} 3.0' in text  # no ip_family label at all
