"""The exporter's own status as metric families: reloads (and the cache saver), in the family table's form.

A table of its own (export/families.py, Scope.EXPORTER: no target labels) whose source is an `ExporterStatus`,
published by the same machinery as the per-target table (`metrics` for prometheus_client, `render` for text), in
the runtime part of /metrics (rendered at most once a second). Alertable as Prometheus' own:
`region_latency_config_last_reload_successful == 0`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from region_latency.export.families import NAMESPACE, AnyFamily, Family, Kind, Sample, Scope
from region_latency.export.prometheus import metrics
from region_latency.lifecycle import ReloadStatus


@dataclass(frozen=True, slots=True)
class CacheSaveStatus:
    """The cache saver's counters, summed over the targets that share the cache."""

    failures_total: int
    last_success_at: float | None  # Unix time of the latest successful save; None before the first


@dataclass(frozen=True, slots=True)
class ExporterStatus:
    reload: ReloadStatus
    cache: CacheSaveStatus | None  # None: no cache configured


def _reload_successful(status: ExporterStatus) -> Iterator[Sample]:
    yield None, (), 1 if status.reload.last_successful else 0


def _reload_success_at(status: ExporterStatus) -> Iterator[Sample]:
    yield None, (), status.reload.last_success_at


def _cache_failures(status: ExporterStatus) -> Iterator[Sample]:
    if status.cache is not None:
        yield None, (), status.cache.failures_total


def _cache_success_at(status: ExporterStatus) -> Iterator[Sample]:
    if status.cache is not None and status.cache.last_success_at is not None:
        yield None, (), status.cache.last_success_at


def _name(short: str) -> str:
    return f"{NAMESPACE}_{short}"


EXPORTER_FAMILIES: tuple[AnyFamily[ExporterStatus], ...] = (
    Family(name=_name("config_last_reload_successful"), kind=Kind.GAUGE, unit="1", scope=Scope.EXPORTER,
           read=_reload_successful, help="1 when the latest configuration (re)load succeeded, else 0."),
    Family(name=_name("config_last_reload_success_timestamp_seconds"), kind=Kind.GAUGE, unit="s",
           scope=Scope.EXPORTER, read=_reload_success_at,
           help="When the configuration was last (re)loaded successfully (Unix time; the start counts)."),
    Family(name=_name("cache_save_failures_total"), kind=Kind.COUNTER, unit="{save}", scope=Scope.EXPORTER,
           read=_cache_failures, help="Saves of the latency cache that failed (no series without a cache)."),
    Family(name=_name("cache_last_save_success_timestamp_seconds"), kind=Kind.GAUGE, unit="s",
           scope=Scope.EXPORTER, read=_cache_success_at,
           help="When the latency cache was last saved successfully (Unix time; no series before the first)."),
)


def exporter_identity(_status: ExporterStatus) -> tuple[str, ...]:
    return ()


class ExporterStatusCollector(Collector):
    """The exporter's own families, read from `status()` at each collection."""

    def __init__(self, status: Callable[[], ExporterStatus]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        return list(metrics(EXPORTER_FAMILIES, [self._status()], exporter_identity))
