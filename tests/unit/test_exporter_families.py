"""The exporter's own families (reloads, cache saves): one table, both writers, promtool-clean names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from region_latency.export.exporter_families import (
    EXPORTER_FAMILIES,
    CacheSaveStatus,
    ExporterStatus,
    ExporterStatusCollector,
    exporter_identity,
)
from region_latency.export.prometheus import build_registry
from region_latency.export.text import render
from region_latency.lifecycle import ReloadStatus

STATUS = ExporterStatus(reload=ReloadStatus(last_successful=False, last_success_at=1700000000.5, reloads=3),
                        cache=CacheSaveStatus(failures_total=4, last_success_at=1700000100.0))


def test_text_writer_and_prometheus_client_agree_on_the_exporter_table() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterStatusCollector(lambda: STATUS))
    assert render(EXPORTER_FAMILIES, [STATUS], exporter_identity) == generate_latest(registry).decode()


def test_reload_and_cache_families_on_metrics() -> None:
    metrics = build_registry(list, extra=[ExporterStatusCollector(lambda: STATUS)])
    text = generate_latest(metrics.registry).decode()
    assert "region_latency_config_last_reload_successful 0.0\n" in text
    assert "region_latency_config_last_reload_success_timestamp_seconds 1.7000000005e+09\n" in text
    assert "region_latency_cache_save_failures_total 4.0\n" in text
    assert "region_latency_cache_last_save_success_timestamp_seconds 1.7000001e+09\n" in text
    restricted = generate_latest(metrics.registry.restricted_registry(
        ["region_latency_config_last_reload_successful"])).decode()
    assert "region_latency_config_last_reload_successful 0.0" in restricted  # name[] filters find them


def test_no_cache_no_cache_series() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterStatusCollector(lambda: ExporterStatus(reload=STATUS.reload, cache=None)))
    text = generate_latest(registry).decode()
    assert "\nregion_latency_cache_save_failures_total " not in text and "reload_successful 0.0" in text
