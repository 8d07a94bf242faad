"""The Prometheus view: a custom Collector that turns target snapshots into metric families.

It only reads immutable snapshots, so a scrape never waits on a probe. Metric names and labels
are documented in docs/METRICS.md; change both together.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from region_latency import __version__
from region_latency.ranking import RegionState
from region_latency.state import SAMPLE_BUCKETS, TargetSnapshot

NAMESPACE = "region_latency"
# From the package metadata: importing botocore only for its version would cost the process ~8 MB.
_BOTOCORE_VERSION = importlib.metadata.version("botocore")
LABELS = ("target", "service", "probe", "region")
PHASES = ("dns", "connect", "tls", "ttfb", "total")


_BUCKET_BOUNDS = (*(repr(float(b)) for b in SAMPLE_BUCKETS), "+Inf")


def bucket_bounds() -> tuple[str, ...]:
    """The `le` label values of region_latency_sample_seconds, +Inf last."""
    return _BUCKET_BOUNDS


class RegionLatencyCollector(Collector):
    """Yields every region_latency_* family from one snapshot per target per scrape."""

    def __init__(self, snapshots: Callable[[], Sequence[TargetSnapshot]]) -> None:
        self._snapshots = snapshots

    def describe(self) -> Iterable[Metric]:
        """The families, empty: their names are fixed even though their series depend on the configuration
        (lets prometheus_client's `name[]` filter find them)."""
        return _Families().all()

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshots())


class BuildInfoCollector(Collector):
    """region_latency_build_info: the exporter's version and what it runs on."""

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(f"{NAMESPACE}_build", "Version of the exporter and of what it is built with.")
        info.add_metric([], {
            "version": __version__,
            "python_version": platform.python_version(),
            "botocore_version": _BOTOCORE_VERSION,
        })
        yield info


def families(snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
    """Every per-target family, in a fixed order, each family complete before the next starts."""
    g = _Families()
    for snap in snapshots:
        g.add(snap)
    yield from g.all()


# (type, help) of every per-target family, by name after `region_latency_`; text.py writes the same families.
HELP: dict[str, tuple[str, str]] = {
    "ema_seconds": ("gauge", "Exponential moving average of the probe latency (the tracker's average)."),
    "samples": ("gauge", "Number of samples the EMA is made of (the tracker's sample count)."),
    "rank": ("gauge", "Position in the published ranking, 1 = fastest; no series for unranked regions."),
    "ranking_info": ("gauge", "The published order as a label set: one series per ranked position "
                              "(the rank and region labels change when the order does)."),
    "region_state": ("gauge", "1 for the region's current ranking state (healthy, failing, stale, unmeasured)."),
    "rank_margin_seconds": ("gauge", "EMA of rank 2 minus EMA of rank 1: how clearly the fastest region leads."),
    "ranked_regions": ("gauge", "Number of regions in the published ranking."),
    "target_regions": ("gauge", "Number of regions the target probes."),
    "probe_success": ("gauge", "1 when the region's latest probe succeeded, else 0."),
    "probe_duration_seconds": ("gauge", "Phase durations of the region's latest probe."),
    "probe_http_status_code": ("gauge", "HTTP status of the region's latest probe (https and api probes)."),
    "last_probe_timestamp_seconds": ("gauge", "When the region was last probed (Unix time)."),
    "last_sample_timestamp_seconds": ("gauge", "When the region last produced a latency sample (Unix time)."),
    "consecutive_failures": ("gauge", "Probes failed in a row since the last success."),
    "probes": ("counter", "Probes run, successful or not."),
    "probe_failures": ("counter", "Failed probes by reason (dns, refused, timeout, tls, http, credentials, ...)."),
    "sample_seconds": ("histogram", "Raw latency samples (what feeds the EMA), for quantiles."),
}
_TARGET = ("target", "service", "probe")


def _family(short: str, labels: Sequence[str]) -> Metric:
    kind, help_text = HELP[short]
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}[kind]
    return cls(f"{NAMESPACE}_{short}", help_text, labels=labels)


class _Families:
    def __init__(self) -> None:
        self.ema = _family("ema_seconds", LABELS)
        self.samples = _family("samples", LABELS)
        self.rank = _family("rank", LABELS)
        self.ranking_info = _family("ranking_info", (*_TARGET, "rank", "region"))
        self.state = _family("region_state", (*LABELS, "state"))
        self.margin = _family("rank_margin_seconds", _TARGET)
        self.ranked = _family("ranked_regions", _TARGET)
        self.configured = _family("target_regions", _TARGET)
        self.success = _family("probe_success", LABELS)
        self.duration = _family("probe_duration_seconds", (*LABELS, "phase"))
        self.status = _family("probe_http_status_code", LABELS)
        self.last_probe = _family("last_probe_timestamp_seconds", LABELS)
        self.last_sample = _family("last_sample_timestamp_seconds", LABELS)
        self.consecutive = _family("consecutive_failures", LABELS)
        self.probes = _family("probes", LABELS)
        self.failures = _family("probe_failures", (*LABELS, "reason"))
        self.histogram = _family("sample_seconds", LABELS)

    def all(self) -> Iterator[Metric]:
        yield from (
            self.ema, self.samples, self.rank, self.ranking_info, self.state, self.margin, self.ranked,
            self.configured, self.success, self.duration, self.status, self.last_probe, self.last_sample,
            self.consecutive, self.probes, self.failures, self.histogram,
        )

    def add(self, snap: TargetSnapshot) -> None:
        info = snap.info
        target_labels = [info.name, info.service, info.probe]
        self.configured.add_metric(target_labels, len(snap.regions))
        ranked = snap.ranking.ranked()
        self.ranked.add_metric(target_labels, len(ranked))
        if snap.ranking.margin is not None:
            self.margin.add_metric(target_labels, snap.ranking.margin)
        states = {entry.region: entry for entry in snap.ranking.entries}
        for entry in ranked:
            self.ranking_info.add_metric([*target_labels, str(entry.rank), entry.region], 1)
        for region in snap.regions:
            labels = [*target_labels, region]
            stats = snap.tracker.regions.get(region)
            if stats is not None and stats.ema is not None:
                self.ema.add_metric(labels, stats.ema)
            self.samples.add_metric(labels, stats.samples if stats else 0)
            self.consecutive.add_metric(labels, stats.consecutive_failures if stats else 0)
            if stats is not None and stats.last_sample_at is not None:
                self.last_sample.add_metric(labels, stats.last_sample_at)
            entry = states.get(region)
            if entry is not None and entry.rank is not None:
                self.rank.add_metric(labels, entry.rank)
            current = entry.state if entry is not None else RegionState.UNMEASURED
            for state in RegionState:
                self.state.add_metric([*labels, state.value], 1 if state is current else 0)
            self._add_probe(snap, region, labels)

    def _add_probe(self, snap: TargetSnapshot, region: str, labels: list[str]) -> None:
        last = snap.last_probe.get(region)
        if last is not None:
            self.success.add_metric(labels, 1 if last.success else 0)
            self.last_probe.add_metric(labels, last.at)
            for phase in PHASES:
                if phase in last.phases:
                    self.duration.add_metric([*labels, phase], last.phases[phase])
            if last.status is not None:
                self.status.add_metric(labels, last.status)
        self.probes.add_metric(labels, snap.probes_total.get(region, 0))
        for (failed_region, reason), count in snap.failures_total.items():
            if failed_region == region:
                self.failures.add_metric([*labels, reason], count)
        hist = snap.histograms.get(region)
        if hist is not None:
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_BOUNDS, hist.bucket_counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            self.histogram.add_metric(labels, buckets, hist.total)


@dataclass(frozen=True)
class ExporterRegistry:
    """What /metrics shows, in two parts: the per-target families, which change only when a probe result lands
    or the ranking moves, and the runtime ones (build info, process, platform, GC), which change all the time
    but are few. The web side renders the first once per snapshot generation (export/text.py) and the second
    at most once a second; `registry` holds both, for prometheus_client's own renderers (OpenMetrics, name[]
    filters, OTLP bridges)."""

    registry: CollectorRegistry
    runtime: CollectorRegistry
    snapshots: Callable[[], Sequence[TargetSnapshot]]

    def collect(self) -> Iterable[Metric]:
        """Everything, so that this can be handed to anything that takes a prometheus_client registry."""
        return self.registry.collect()


def build_registry(snapshots: Callable[[], Sequence[TargetSnapshot]]) -> ExporterRegistry:
    """Registries of our own (not the global default): the exporter's families, then build info and process."""
    runtime = CollectorRegistry(auto_describe=True)  # learns the process/GC family names, for name[] filters
    runtime.register(BuildInfoCollector())
    ProcessCollector(registry=runtime)
    PlatformCollector(registry=runtime)
    GCCollector(registry=runtime)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RegionLatencyCollector(snapshots))
    registry.register(runtime)
    return ExporterRegistry(registry, runtime, snapshots)
