"""The Prometheus view: a custom Collector that publishes the family table (export/families.py).

It only reads immutable snapshots, so a scrape never waits on a probe. The families themselves (names, HELP,
labels, which series exist) are declared in export/families.py and documented in docs/METRICS.md.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from region_latency._version import __version__
from region_latency.export.families import (
    NAMESPACE,
    TARGET_FAMILIES,
    AnyFamily,
    Family,
    HistogramFamily,
    Kind,
    target_identity,
)
from region_latency.state import TargetSnapshot

# From the package metadata: importing botocore only for its version would cost the process ~8 MB.
_BOTOCORE_VERSION = importlib.metadata.version("botocore")

Source = TypeVar("Source")


class RegionLatencyCollector(Collector):
    """Yields every family of the table (export/families.py) from one snapshot per target per scrape."""

    def __init__(self, snapshots: Callable[[], Sequence[TargetSnapshot]]) -> None:
        self._snapshots = snapshots

    def describe(self) -> Iterable[Metric]:
        """The families, empty: their names are fixed even though their series depend on the configuration
        (lets prometheus_client's `name[]` filter find them)."""
        return [_empty(family) for family in TARGET_FAMILIES]

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
    """Every per-target family, in the table's order, each family complete before the next starts."""
    return metrics(TARGET_FAMILIES, snapshots, target_identity)


def _empty(family: AnyFamily[Source]) -> Metric:
    if isinstance(family, HistogramFamily):
        return HistogramMetricFamily(family.name, family.help, labels=family.labels)
    return _scalar(family)


def _scalar(family: Family[Source]) -> GaugeMetricFamily | CounterMetricFamily:
    # No `unit=`: prometheus_client would add a # UNIT line to OpenMetrics answers (and demand the suffix).
    if family.kind is Kind.COUNTER:
        return CounterMetricFamily(family.name, family.help, labels=family.labels)
    return GaugeMetricFamily(family.name, family.help, labels=family.labels)


def metrics(table: Sequence[AnyFamily[Source]], sources: Sequence[Source],
            identity: Callable[[Source], tuple[str | None, ...]]) -> Iterator[Metric]:
    """prometheus_client families of `table` over `sources`; `identity` gives a source's values of the labels its
    families' scope starts with (a snapshot: target, service, probe)."""
    idents = [identity(source) for source in sources]
    for family in table:
        if isinstance(family, HistogramFamily):
            histogram = HistogramMetricFamily(family.name, family.help, labels=family.labels)
            for source, ident in zip(sources, idents, strict=True):
                le = family.le_labels_for(source)
                for region, extra, (cumulative, total) in family.read(source):
                    start = len(histogram.samples)
                    histogram.add_metric(_label_values(ident, region, extra),  # type: ignore[arg-type]
                                         list(zip(le, cumulative, strict=True)), total)
                    _leave_out_unset(histogram, start)
            yield histogram
            continue
        metric = _scalar(family)
        for source, ident in zip(sources, idents, strict=True):
            for region, extra, value in family.read(source):
                start = len(metric.samples)
                metric.add_metric(_label_values(ident, region, extra), value)  # type: ignore[arg-type]
                _leave_out_unset(metric, start)
        yield metric


def _label_values(ident: tuple[str | None, ...], region: str | None, extra: tuple[str, ...]) -> list[str | None]:
    return [*ident, *extra] if region is None else [*ident, region, *extra]


def _leave_out_unset(metric: Metric, start: int) -> None:
    """Drop the labels whose value is None (an optional label such as ip_family, unset) from the samples just
    added: the series then reads as if the family had no such label, as export/text.py writes it."""
    for i in range(start, len(metric.samples)):
        sample = metric.samples[i]
        if None in sample.labels.values():
            metric.samples[i] = sample._replace(labels={k: v for k, v in sample.labels.items() if v is not None})


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


def build_registry(snapshots: Callable[[], Sequence[TargetSnapshot]],
                   extra: Sequence[Collector] = ()) -> ExporterRegistry:
    """Registries of our own (not the global default): the exporter's families, then build info and process.

    `extra` collectors (the exporter's own status) join the runtime part: rendered at most once a second."""
    runtime = CollectorRegistry(auto_describe=True)  # learns the process/GC family names, for name[] filters
    runtime.register(BuildInfoCollector())
    for collector in extra:
        runtime.register(collector)
    ProcessCollector(registry=runtime)
    PlatformCollector(registry=runtime)
    GCCollector(registry=runtime)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RegionLatencyCollector(snapshots))
    registry.register(runtime)
    return ExporterRegistry(registry, runtime, snapshots)
