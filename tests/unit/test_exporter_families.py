"""The exporter's own families (reloads, cache saves): one table, both writers, promtool-clean names."""

from __future__ import annotations

from pathlib import Path

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


def test_the_exporter_counts_failed_cache_saves_across_targets_and_keeps_them_after_a_target_goes(
        tmp_path: Path) -> None:
    import time

    import yaml

    from region_latency.app import ConfigSource, Exporter
    from region_latency.probes.base import ProbeResult

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache's directory should be\n")

    def document(names: tuple[str, ...]) -> str:
        targets = [{"name": name, "service": "bedrock-runtime", "probe": "tcp", "regions": [],
                    "endpoints": {"r1": "https://127.0.0.1:1"}, "interval": "10s", "timeout": "1s"} for name in names]
        return yaml.safe_dump({"listen": "127.0.0.1:0", "targets": targets,
                               "cache": {"type": "file", "path": str(blocked / "cache.json")}})

    path = tmp_path / "config.yaml"
    path.write_text(document(("a", "b")))
    exporter = Exporter(ConfigSource(path, {}, {}, isolated=False))
    try:
        assert exporter.status().cache == CacheSaveStatus(failures_total=0, last_success_at=None)
        for state in exporter.states.values():
            state.record("r1", ProbeResult(0.01))
            assert state.tracker.saver is not None
            state.tracker.saver.flush()
        deadline = time.monotonic() + 10
        while exporter.status().cache.failures_total < 2 and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        failed = exporter.status().cache
        assert failed is not None and failed.failures_total >= 2 and failed.last_success_at is None
        path.write_text(document(("a",)))
        assert exporter.reload() is None
        after = exporter.status().cache
        assert after is not None and after.failures_total >= failed.failures_total  # b's failures still counted
        text = generate_latest(exporter.registry.registry).decode()
        (shown,) = [line for line in text.splitlines() if line.startswith("region_latency_cache_save_failures_total ")]
        assert float(shown.split()[1]) >= after.failures_total  # retries may have failed since
    finally:
        exporter.stop()


def test_the_exporter_scope_has_no_labels_on_every_python() -> None:
    from region_latency.export.families import Scope

    assert Scope.EXPORTER.labels == () and all(isinstance(f.labels, tuple) for f in EXPORTER_FAMILIES)
