"""The Prometheus view: a custom Collector that turns target snapshots into metric families.

It only reads immutable snapshots, so a scrape never waits on a probe. Metric names and labels
are documented in docs/METRICS.md; change both together.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence

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


def _bucket_bound(value: float) -> str:
    return repr(float(value))


_BUCKET_BOUNDS = (*(_bucket_bound(b) for b in SAMPLE_BUCKETS), "+Inf")


class RegionLatencyCollector(Collector):
    """Yields every region_latency_* family from one snapshot per target per scrape."""

    def __init__(self, snapshots: Callable[[], Sequence[TargetSnapshot]]) -> None:
        self._snapshots = snapshots

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the configuration; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshots())
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


class _Families:
    def __init__(self) -> None:
        n = NAMESPACE
        self.ema = GaugeMetricFamily(
            f"{n}_ema_seconds", "Exponential moving average of the probe latency (the tracker's average).",
            labels=LABELS)
        self.samples = GaugeMetricFamily(
            f"{n}_samples", "Number of samples the EMA is made of (the tracker's sample count).", labels=LABELS)
        self.rank = GaugeMetricFamily(
            f"{n}_rank", "Position in the published ranking, 1 = fastest; no series for unranked regions.",
            labels=LABELS)
        self.ranking_info = GaugeMetricFamily(
            f"{n}_ranking_info", "The published order as a label set: one series per ranked position "
            "(the rank and region labels change when the order does).",
            labels=("target", "service", "probe", "rank", "region"))
        self.state = GaugeMetricFamily(
            f"{n}_region_state", "1 for the region's current ranking state (healthy, failing, stale, unmeasured).",
            labels=(*LABELS, "state"))
        self.margin = GaugeMetricFamily(
            f"{n}_rank_margin_seconds", "EMA of rank 2 minus EMA of rank 1: how clearly the fastest region leads.",
            labels=("target", "service", "probe"))
        self.ranked = GaugeMetricFamily(
            f"{n}_ranked_regions", "Number of regions in the published ranking.", labels=("target", "service", "probe"))
        self.configured = GaugeMetricFamily(
            f"{n}_target_regions", "Number of regions the target probes.", labels=("target", "service", "probe"))
        self.success = GaugeMetricFamily(
            f"{n}_probe_success", "1 when the region's latest probe succeeded, else 0.", labels=LABELS)
        self.duration = GaugeMetricFamily(
            f"{n}_probe_duration_seconds", "Phase durations of the region's latest probe.", labels=(*LABELS, "phase"))
        self.status = GaugeMetricFamily(
            f"{n}_probe_http_status_code", "HTTP status of the region's latest probe (https and api probes).",
            labels=LABELS)
        self.last_probe = GaugeMetricFamily(
            f"{n}_last_probe_timestamp_seconds", "When the region was last probed (Unix time).", labels=LABELS)
        self.last_sample = GaugeMetricFamily(
            f"{n}_last_sample_timestamp_seconds", "When the region last produced a latency sample (Unix time).",
            labels=LABELS)
        self.consecutive = GaugeMetricFamily(
            f"{n}_consecutive_failures", "Probes failed in a row since the last success.", labels=LABELS)
        self.probes = CounterMetricFamily(
            f"{n}_probes", "Probes run, successful or not.", labels=LABELS)
        self.failures = CounterMetricFamily(
            f"{n}_probe_failures", "Failed probes by reason (dns, refused, timeout, tls, http, credentials, ...).",
            labels=(*LABELS, "reason"))
        self.histogram = HistogramMetricFamily(
            f"{n}_sample_seconds", "Raw latency samples (what feeds the EMA), for quantiles.", labels=LABELS)

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


def build_registry(snapshots: Callable[[], Sequence[TargetSnapshot]]) -> CollectorRegistry:
    """A registry of our own (not the global default) with the exporter and process collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegionLatencyCollector(snapshots))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
