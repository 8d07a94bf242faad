"""The table of metric families: every region_latency_* family a target publishes, declared once.

Each entry says what the family is (name, kind, unit, help, labels) and how its samples are read from a
`TargetSnapshot`. Everything that publishes them reads this table and nothing else: the prometheus_client
Collector (export/prometheus.py), the fast text writer (export/text.py), and later the OTLP exporter. So a new
family is one entry here (and a row in docs/METRICS.md); order, HELP text and which series exist are never
written twice.

A reader yields samples `(region, extra, value)`: `region` is the region for a REGION-scoped family and None for
a TARGET-scoped one (the publishers add the target's labels, and the region's), `extra` the values of the
family's `extra_labels`, in order. A series that has nothing to show is not yielded (no EMA before the first
sample, no rank for an unranked region), and neither is one the target's `metrics:` options leave out
(region_latency/metric_options.py: phases, states, ranked positions, probe details, the histogram). A
REGION-scoped family also has `read_region(snapshot, region)`, one region's part of the same walk, so that a
writer can redo only the regions that changed (export/text.py's TargetText); a histogram's bucket bounds are
the target's own (`HistogramFamily.bounds(source)`; `buckets` is the default).

The metadata is enough to derive an OpenTelemetry instrument: `kind` gives the instrument (gauge: an observable
gauge, counter: an observable monotonic counter, histogram: a histogram with `buckets` as explicit bounds),
`unit` is UCUM as OpenTelemetry wants it (`s`, `1`, `{probe}`), `help` the description, and the name without
`_total` and without the unit's word (`_seconds`) the instrument's name stem. Families of the exporter itself
(say, whether the last reload succeeded) have no target: they get a table of their own whose source is the
exporter's status rather than a snapshot, and a scope without target labels; the publishers take the table,
the sources and a function giving each source's identity labels (see `target_identity`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Generic, TypeVar

from region_latency import metric_options
from region_latency.ranking import RankedRegion, RegionState
from region_latency.state import SAMPLE_BUCKETS, TargetSnapshot

NAMESPACE = "region_latency"
PHASES = metric_options.PHASES  # every phase a probe may time, in the table's order (declared with the options)

Source = TypeVar("Source")
_V = TypeVar("_V")
# (region or None, values of the family's extra labels, value)
Sample = tuple[str | None, tuple[str, ...], float]
# (region or None, values of the extra labels, (cumulative bucket counts with +Inf last, sum of the samples))
HistogramSample = tuple[str | None, tuple[str, ...], tuple[tuple[int, ...], float]]
# One region's part of a REGION-scoped family: (values of the extra labels, value)
RegionSample = tuple[tuple[str, ...], float]
RegionHistogramSample = tuple[tuple[str, ...], tuple[tuple[int, ...], float]]


class Kind(StrEnum):
    """The Prometheus type, which also decides the OpenTelemetry instrument."""

    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class Scope(Enum):
    """Whose series a family holds: the labels every one of its samples starts with.

    `ip_family` is an optional label: its value is None (and the publishers leave the label out) unless the target
    asked for `ip_families`, whose every family is a source of its own.
    """

    TARGET = ("target", "service", "probe", "ip_family")
    REGION = ("target", "service", "probe", "ip_family", "region")
    # The exporter's own status (reloads, cache saves): no target labels. Not `()`: Python 3.11.2's Enum turns an
    # empty-tuple value into a bare object().
    EXPORTER = "exporter"

    @property
    def labels(self) -> tuple[str, ...]:
        if self is Scope.EXPORTER:
            return ()
        labels: tuple[str, ...] = self.value
        return labels


@dataclass(frozen=True, kw_only=True)
class FamilyInfo:
    """What a family is, independent of how it is read or published."""

    name: str  # as queried: counters end in _total
    kind: Kind
    unit: str  # UCUM, as OpenTelemetry takes it: "s", "1", "{probe}"
    help: str
    scope: Scope
    extra_labels: tuple[str, ...] = ()
    # REGION scope: the values come from the region's ranking entry (rank, state), which another region's result
    # can change; every other REGION-scoped family changes only with the region's own results.
    follows_ranking: bool = False

    def __post_init__(self) -> None:
        if (self.kind is Kind.COUNTER) != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")
        if (self.unit == "s") != (self.name.removesuffix("_total").endswith("_seconds")):
            raise ValueError(f"{self.name}: unit s and the _seconds suffix go together")
        if isinstance(self, HistogramFamily) != (self.kind is Kind.HISTOGRAM):
            raise ValueError(f"{self.name}: histograms, and only histograms, are HistogramFamily")

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label name of the family's series, in the order their values are given."""
        return (*self.scope.labels, *self.extra_labels)


@dataclass(frozen=True, kw_only=True)
class Family(FamilyInfo, Generic[Source]):
    """A gauge or a counter: one value per series."""

    read: Callable[[Source], Iterable[Sample]]
    # REGION scope: one region's samples, so that a writer can redo only the regions that changed (export/text.py);
    # `read` is the same walk over every region of the source, in the source's order.
    read_region: Callable[[Source, str], Iterable[RegionSample]] | None = None


@dataclass(frozen=True, kw_only=True)
class HistogramFamily(FamilyInfo, Generic[Source]):
    """A histogram: cumulative counts per bucket bound (`le`), and the sum."""

    buckets: tuple[float, ...]  # upper bounds, +Inf implied: the default; a source may have its own (bounds_of)
    read: Callable[[Source], Iterable[HistogramSample]]
    read_region: Callable[[Source, str], Iterable[RegionHistogramSample]] | None = None
    bounds_of: Callable[[Source], tuple[float, ...]] | None = None  # a source's own buckets (a target's config)

    @property
    def le_labels(self) -> tuple[str, ...]:
        """The `le` label values of the default buckets, +Inf last, as prometheus_client writes them."""
        return _le_labels(self.buckets)

    def bounds(self, source: Source) -> tuple[float, ...]:
        """The bucket bounds of `source`'s series."""
        return self.buckets if self.bounds_of is None else self.bounds_of(source)

    def le_labels_for(self, source: Source) -> tuple[str, ...]:
        """The `le` label values of `source`'s series, +Inf last."""
        return _le_labels(self.bounds(source))


AnyFamily = Family[Source] | HistogramFamily[Source]


@functools.lru_cache(maxsize=256)
def _le_labels(buckets: tuple[float, ...]) -> tuple[str, ...]:
    return (*(repr(float(bound)) for bound in buckets), "+Inf")


def target_identity(snap: TargetSnapshot) -> tuple[str, str, str, str | None]:
    """The values of Scope.TARGET's labels for one snapshot (ip_family None unless the target asked for it)."""
    info = snap.info
    return info.name, info.service, info.probe, info.ip_family


# --- readers: one per family, each walking one snapshot (REGION scope: one region of it) -------------------------
# A REGION-scoped family's reader takes (snapshot, region) and yields (extra label values, value); `_each_region`
# makes the walk over every region from it. What the target's `metrics:` options leave out is never yielded.

def _each_region(read_region: Callable[[TargetSnapshot, str], Iterable[tuple[tuple[str, ...], _V]]]
                 ) -> Callable[[TargetSnapshot], Iterator[tuple[str | None, tuple[str, ...], _V]]]:
    def read(snap: TargetSnapshot) -> Iterator[tuple[str | None, tuple[str, ...], _V]]:
        for region in snap.regions:
            for extra, value in read_region(snap, region):
                yield region, extra, value

    return read


def _target_regions(snap: TargetSnapshot) -> Iterator[Sample]:
    yield None, (), len(snap.regions)


def _ranked_regions(snap: TargetSnapshot) -> Iterator[Sample]:
    yield None, (), len(snap.ranking.ranked())


def _rank_margin(snap: TargetSnapshot) -> Iterator[Sample]:
    margin = snap.ranking.margin
    if margin is not None:
        yield None, (), margin


def _ranking_info(snap: TargetSnapshot) -> Iterator[Sample]:
    ranked = snap.ranking.ranked()
    for entry in ranked[:snap.metrics.ranked_positions(len(ranked))]:
        yield None, (str(entry.rank), entry.region), 1


def _ema(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    stats = snap.tracker.regions.get(region)
    if stats is not None and stats.ema is not None:
        yield (), stats.ema


def _samples(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    stats = snap.tracker.regions.get(region)
    yield (), stats.samples if stats else 0


def _consecutive_failures(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    stats = snap.tracker.regions.get(region)
    yield (), stats.consecutive_failures if stats else 0


def _last_sample_at(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    stats = snap.tracker.regions.get(region)
    if stats is not None and stats.last_sample_at is not None:
        yield (), stats.last_sample_at


def _untrusted(snap: TargetSnapshot) -> Iterator[Sample]:
    violation = snap.trust.violation
    if violation is not None:
        yield None, (violation.reason.value, violation.region_a, violation.region_b), 1


_last_entries: tuple[object, dict[str, RankedRegion]] = (None, {})


def entries_by_region(snap: TargetSnapshot) -> Mapping[str, RankedRegion]:
    """The ranking's entries by region (made once per ranking, not once per region)."""
    global _last_entries
    ranking, entries = _last_entries
    if ranking is not snap.ranking:
        entries = {entry.region: entry for entry in snap.ranking.entries}
        _last_entries = (snap.ranking, entries)
    return entries


def _rank(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    entry = entries_by_region(snap).get(region)
    if entry is not None and entry.rank is not None:
        yield (), entry.rank


_STATES = tuple(RegionState)


def _region_state(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    entry = entries_by_region(snap).get(region)
    current = entry.state if entry is not None else RegionState.UNMEASURED
    if snap.metrics.region_state == "current":
        yield (current.value,), 1
        return
    for state in _STATES:
        yield (state.value,), 1 if state is current else 0


def _probe_success(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    last = snap.last_probe.get(region)
    if last is not None:
        yield (), 1 if last.success else 0


def _probe_duration(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    last = snap.last_probe.get(region)
    if last is not None and last.phases:
        phases = last.phases
        for phase in snap.metrics.phases:
            if phase in phases:
                yield (phase,), phases[phase]


def _http_status(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    last = snap.last_probe.get(region)
    if last is not None and last.status is not None and snap.metrics.probe_details:
        yield (), last.status


def _last_probe_at(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    last = snap.last_probe.get(region)
    if last is not None and snap.metrics.probe_details:
        yield (), last.at


def _probes(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    yield (), snap.probes_total.get(region, 0)


_last_failures: tuple[object, dict[str, list[tuple[str, int]]]] = (None, {})


def _probe_failures(snap: TargetSnapshot, region: str) -> Iterator[RegionSample]:
    """A region's reasons in the order they first happened."""
    global _last_failures
    failures, by_region = _last_failures
    if failures is not snap.failures_total:
        by_region = {}
        for (name, reason), count in snap.failures_total.items():
            by_region.setdefault(name, []).append((reason, count))
        _last_failures = (snap.failures_total, by_region)
    for reason, count in by_region.get(region, ()):
        yield (reason,), count


def _sample_histogram(snap: TargetSnapshot, region: str) -> Iterator[RegionHistogramSample]:
    hist = snap.histograms.get(region)
    if hist is not None and snap.metrics.histogram.enabled and len(hist.bucket_counts) == len(snap.buckets) + 1:
        cumulative, running = [], 0
        for count in hist.bucket_counts:
            running += count
            cumulative.append(running)
        yield (), (tuple(cumulative), hist.total)


def _target_buckets(snap: TargetSnapshot) -> tuple[float, ...]:
    return snap.buckets


def _regional(read_region: Callable[[TargetSnapshot, str], Iterable[RegionSample]]) -> dict[str, Any]:
    """`read` and `read_region` of a REGION-scoped gauge or counter, from its per-region reader."""
    return {"read": _each_region(read_region), "read_region": read_region}


# --- the table -------------------------------------------------------------------------------------------------

def _name(short: str) -> str:
    return f"{NAMESPACE}_{short}"


# Every per-target family, in the order /metrics shows them.
TARGET_FAMILIES: tuple[AnyFamily[TargetSnapshot], ...] = (
    Family(name=_name("ema_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION, **_regional(_ema),
           help="Exponential moving average of the probe latency (the tracker's average)."),
    Family(name=_name("samples"), kind=Kind.GAUGE, unit="{sample}", scope=Scope.REGION, **_regional(_samples),
           help="Number of samples the EMA is made of (the tracker's sample count)."),
    Family(name=_name("rank"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, **_regional(_rank),
           follows_ranking=True,
           help="Position in the published ranking, 1 = fastest; no series for unranked regions."),
    Family(name=_name("ranking_info"), kind=Kind.GAUGE, unit="1", scope=Scope.TARGET,
           extra_labels=("rank", "region"), read=_ranking_info,
           help="The published order as a label set: one series per ranked position shown (metrics.ranking_info; "
                "the rank and region labels change when the order does)."),
    Family(name=_name("region_state"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, extra_labels=("state",),
           **_regional(_region_state), follows_ranking=True,
           help="1 for the region's current ranking state (healthy, failing, stale, unmeasured)."),
    Family(name=_name("rank_margin_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.TARGET, read=_rank_margin,
           help="EMA of rank 2 minus EMA of rank 1: how clearly the fastest region leads."),
    Family(name=_name("ranked_regions"), kind=Kind.GAUGE, unit="{region}", scope=Scope.TARGET,
           read=_ranked_regions, help="Number of regions in the published ranking."),
    Family(name=_name("target_regions"), kind=Kind.GAUGE, unit="{region}", scope=Scope.TARGET,
           read=_target_regions, help="Number of regions the target probes."),
    Family(name=_name("measurements_untrusted"), kind=Kind.GAUGE, unit="1", scope=Scope.TARGET,
           extra_labels=("reason", "region_a", "region_b"), read=_untrusted,
           help="1 when two regions' EMAs sum to less than light in fibre needs between them: something near "
                "the exporter answers for the regions (a proxy, a TCP-terminating NAT, a VPN). At most one series "
                "per target (the worst pair); absent while the measurements can be real."),
    Family(name=_name("probe_success"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, **_regional(_probe_success),
           help="1 when the region's latest probe succeeded, else 0."),
    Family(name=_name("probe_duration_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           extra_labels=("phase",), **_regional(_probe_duration),
           help="Phase durations of the region's latest probe."),
    Family(name=_name("probe_http_status_code"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION,
           **_regional(_http_status), help="HTTP status of the region's latest probe (https and api probes)."),
    Family(name=_name("last_probe_timestamp_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           **_regional(_last_probe_at), help="When the region was last probed (Unix time)."),
    Family(name=_name("last_sample_timestamp_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           **_regional(_last_sample_at), help="When the region last produced a latency sample (Unix time)."),
    Family(name=_name("consecutive_failures"), kind=Kind.GAUGE, unit="{probe}", scope=Scope.REGION,
           **_regional(_consecutive_failures), help="Probes failed in a row since the last success."),
    Family(name=_name("probes_total"), kind=Kind.COUNTER, unit="{probe}", scope=Scope.REGION, **_regional(_probes),
           help="Probes run, successful or not."),
    Family(name=_name("probe_failures_total"), kind=Kind.COUNTER, unit="{probe}", scope=Scope.REGION,
           extra_labels=("reason",), **_regional(_probe_failures),
           help="Failed probes by reason (dns, refused, timeout, tls, http, credentials, ...)."),
    HistogramFamily(name=_name("sample_seconds"), kind=Kind.HISTOGRAM, unit="s", scope=Scope.REGION,
                    buckets=SAMPLE_BUCKETS, read=_each_region(_sample_histogram), read_region=_sample_histogram,
                    bounds_of=_target_buckets, help="Raw latency samples (what feeds the EMA), for quantiles."),
)
