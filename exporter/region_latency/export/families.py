"""The table of metric families: every region_latency_* family a target publishes, declared once.

Each entry says what the family is (name, kind, unit, help, labels) and how its samples are read from a
`TargetSnapshot`. Everything that publishes them reads this table and nothing else: the prometheus_client
Collector (export/prometheus.py), the fast text writer (export/text.py), and later the OTLP exporter. So a new
family is one entry here (and a row in docs/METRICS.md); order, HELP text and which series exist are never
written twice.

A reader yields samples `(region, extra, value)`: `region` is the region for a REGION-scoped family and None for
a TARGET-scoped one (the publishers add the target's labels, and the region's), `extra` the values of the
family's `extra_labels`, in order. A series that has nothing to show is not yielded (no EMA before the first
sample, no rank for an unranked region).

The metadata is enough to derive an OpenTelemetry instrument: `kind` gives the instrument (gauge: an observable
gauge, counter: an observable monotonic counter, histogram: a histogram with `buckets` as explicit bounds),
`unit` is UCUM as OpenTelemetry wants it (`s`, `1`, `{probe}`), `help` the description, and the name without
`_total` and without the unit's word (`_seconds`) the instrument's name stem. Families of the exporter itself
(say, whether the last reload succeeded) have no target: they get a table of their own whose source is the
exporter's status rather than a snapshot, and a scope without target labels; the publishers take the table,
the sources and a function giving each source's identity labels (see `target_identity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Generic, TypeVar

from region_latency.ranking import RankedRegion, RegionState
from region_latency.state import SAMPLE_BUCKETS, TargetSnapshot

NAMESPACE = "region_latency"
PHASES = ("dns", "connect", "tls", "ttfb", "total")

Source = TypeVar("Source")
# (region or None, values of the family's extra labels, value)
Sample = tuple[str | None, tuple[str, ...], float]
# (region or None, values of the extra labels, (cumulative bucket counts with +Inf last, sum of the samples))
HistogramSample = tuple[str | None, tuple[str, ...], tuple[tuple[int, ...], float]]


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


@dataclass(frozen=True, kw_only=True)
class HistogramFamily(FamilyInfo, Generic[Source]):
    """A histogram: cumulative counts per bucket bound (`le`), and the sum."""

    buckets: tuple[float, ...]  # upper bounds, +Inf implied
    read: Callable[[Source], Iterable[HistogramSample]]

    @property
    def le_labels(self) -> tuple[str, ...]:
        """The `le` label values, +Inf last, as prometheus_client writes them."""
        return _le_labels(self.buckets)


AnyFamily = Family[Source] | HistogramFamily[Source]


def _le_labels(buckets: tuple[float, ...]) -> tuple[str, ...]:
    return (*(repr(float(bound)) for bound in buckets), "+Inf")


def target_identity(snap: TargetSnapshot) -> tuple[str, str, str, str | None]:
    """The values of Scope.TARGET's labels for one snapshot (ip_family None unless the target asked for it)."""
    info = snap.info
    return info.name, info.service, info.probe, info.ip_family


# --- readers: one per family, each walking one snapshot ---------------------------------------------------------

def _target_regions(snap: TargetSnapshot) -> Iterator[Sample]:
    yield None, (), len(snap.regions)


def _ranked_regions(snap: TargetSnapshot) -> Iterator[Sample]:
    yield None, (), len(snap.ranking.ranked())


def _rank_margin(snap: TargetSnapshot) -> Iterator[Sample]:
    margin = snap.ranking.margin
    if margin is not None:
        yield None, (), margin


def _ranking_info(snap: TargetSnapshot) -> Iterator[Sample]:
    for entry in snap.ranking.ranked():
        yield None, (str(entry.rank), entry.region), 1


def _ema(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        stats = snap.tracker.regions.get(region)
        if stats is not None and stats.ema is not None:
            yield region, (), stats.ema


def _samples(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        stats = snap.tracker.regions.get(region)
        yield region, (), stats.samples if stats else 0


def _consecutive_failures(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        stats = snap.tracker.regions.get(region)
        yield region, (), stats.consecutive_failures if stats else 0


def _last_sample_at(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        stats = snap.tracker.regions.get(region)
        if stats is not None and stats.last_sample_at is not None:
            yield region, (), stats.last_sample_at


def _untrusted(snap: TargetSnapshot) -> Iterator[Sample]:
    violation = snap.trust.violation
    if violation is not None:
        yield None, (violation.reason.value, violation.region_a, violation.region_b), 1


def _entries(snap: TargetSnapshot) -> dict[str, RankedRegion]:
    return {entry.region: entry for entry in snap.ranking.entries}


def _rank(snap: TargetSnapshot) -> Iterator[Sample]:
    entries = _entries(snap)
    for region in snap.regions:
        entry = entries.get(region)
        if entry is not None and entry.rank is not None:
            yield region, (), entry.rank


_STATES = tuple(RegionState)


def _region_state(snap: TargetSnapshot) -> Iterator[Sample]:
    entries = _entries(snap)
    for region in snap.regions:
        entry = entries.get(region)
        current = entry.state if entry is not None else RegionState.UNMEASURED
        for state in _STATES:
            yield region, (state.value,), 1 if state is current else 0


def _probe_success(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        last = snap.last_probe.get(region)
        if last is not None:
            yield region, (), 1 if last.success else 0


def _probe_duration(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        last = snap.last_probe.get(region)
        if last is not None:
            for phase in PHASES:
                if phase in last.phases:
                    yield region, (phase,), last.phases[phase]


def _http_status(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        last = snap.last_probe.get(region)
        if last is not None and last.status is not None:
            yield region, (), last.status


def _last_probe_at(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        last = snap.last_probe.get(region)
        if last is not None:
            yield region, (), last.at


def _probes(snap: TargetSnapshot) -> Iterator[Sample]:
    for region in snap.regions:
        yield region, (), snap.probes_total.get(region, 0)


def _probe_failures(snap: TargetSnapshot) -> Iterator[Sample]:
    """Region by region in the target's order; a region's reasons in the order they first happened."""
    by_region: dict[str, list[tuple[str, int]]] = {}
    for (region, reason), count in snap.failures_total.items():
        by_region.setdefault(region, []).append((reason, count))
    for region in snap.regions:
        for reason, count in by_region.get(region, ()):
            yield region, (reason,), count


def _sample_histogram(snap: TargetSnapshot) -> Iterator[HistogramSample]:
    for region in snap.regions:
        hist = snap.histograms.get(region)
        if hist is not None:
            cumulative, running = [], 0
            for count in hist.bucket_counts:
                running += count
                cumulative.append(running)
            yield region, (), (tuple(cumulative), hist.total)


# --- the table -------------------------------------------------------------------------------------------------

def _name(short: str) -> str:
    return f"{NAMESPACE}_{short}"


# Every per-target family, in the order /metrics shows them.
TARGET_FAMILIES: tuple[AnyFamily[TargetSnapshot], ...] = (
    Family(name=_name("ema_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION, read=_ema,
           help="Exponential moving average of the probe latency (the tracker's average)."),
    Family(name=_name("samples"), kind=Kind.GAUGE, unit="{sample}", scope=Scope.REGION, read=_samples,
           help="Number of samples the EMA is made of (the tracker's sample count)."),
    Family(name=_name("rank"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, read=_rank,
           help="Position in the published ranking, 1 = fastest; no series for unranked regions."),
    Family(name=_name("ranking_info"), kind=Kind.GAUGE, unit="1", scope=Scope.TARGET,
           extra_labels=("rank", "region"), read=_ranking_info,
           help="The published order as a label set: one series per ranked position "
                "(the rank and region labels change when the order does)."),
    Family(name=_name("region_state"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, extra_labels=("state",),
           read=_region_state,
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
    Family(name=_name("probe_success"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, read=_probe_success,
           help="1 when the region's latest probe succeeded, else 0."),
    Family(name=_name("probe_duration_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           extra_labels=("phase",), read=_probe_duration, help="Phase durations of the region's latest probe."),
    Family(name=_name("probe_http_status_code"), kind=Kind.GAUGE, unit="1", scope=Scope.REGION, read=_http_status,
           help="HTTP status of the region's latest probe (https and api probes)."),
    Family(name=_name("last_probe_timestamp_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           read=_last_probe_at, help="When the region was last probed (Unix time)."),
    Family(name=_name("last_sample_timestamp_seconds"), kind=Kind.GAUGE, unit="s", scope=Scope.REGION,
           read=_last_sample_at, help="When the region last produced a latency sample (Unix time)."),
    Family(name=_name("consecutive_failures"), kind=Kind.GAUGE, unit="{probe}", scope=Scope.REGION,
           read=_consecutive_failures, help="Probes failed in a row since the last success."),
    Family(name=_name("probes_total"), kind=Kind.COUNTER, unit="{probe}", scope=Scope.REGION, read=_probes,
           help="Probes run, successful or not."),
    Family(name=_name("probe_failures_total"), kind=Kind.COUNTER, unit="{probe}", scope=Scope.REGION,
           extra_labels=("reason",), read=_probe_failures,
           help="Failed probes by reason (dns, refused, timeout, tls, http, credentials, ...)."),
    HistogramFamily(name=_name("sample_seconds"), kind=Kind.HISTOGRAM, unit="s", scope=Scope.REGION,
                    buckets=SAMPLE_BUCKETS, read=_sample_histogram,
                    help="Raw latency samples (what feeds the EMA), for quantiles."),
)
