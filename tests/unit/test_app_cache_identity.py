"""A target's cached averages are keyed by its name, service and probe kind: changing what a name measures
starts afresh (at a restart and at a reload), and going back finds the old averages."""

from __future__ import annotations

from pathlib import Path

import yaml

from region_latency.app import ConfigSource, Exporter, cache_prefix
from region_latency.probes.base import ProbeResult
from region_latency.state import TargetInfo


def write(path: Path, cache: Path, probe: str, service: str = "bedrock-runtime", **options: str) -> None:
    target = {"name": "t", "service": service, "probe": probe, "regions": [],
              "endpoints": {"r1": "https://127.0.0.1:1"}, "interval": "600s", "timeout": "1s", "options": options}
    path.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "cache": {"type": "file", "path": str(cache)},
                                    "targets": [target]}))


def run(path: Path, record: float | None = None) -> float | None:
    """Start an exporter on the file, optionally record a sample, stop (flushing the cache); the EMA it started
    with."""
    exporter = Exporter(ConfigSource(path, {}, {}, isolated=False))
    exporter.start()
    try:
        state = exporter.states["t"]
        started_with = state.tracker.get_latency("r1")
        if record is not None:
            state.record("r1", ProbeResult(record, {"connect": record}))
        return started_with
    finally:
        exporter.stop()


def test_a_name_reused_for_another_probe_kind_or_service_starts_afresh(tmp_path: Path) -> None:
    config, cache = tmp_path / "config.yaml", tmp_path / "cache.json"
    write(config, cache, "tcp")
    assert run(config, record=0.05) is None
    assert run(config) == 0.05  # same target: warm start
    write(config, cache, "https")
    assert run(config, record=0.2) is None  # same name, another probe kind: not the tcp average
    write(config, cache, "tcp", service="bedrock")
    assert run(config) is None  # same name and kind, another service
    write(config, cache, "tcp")
    assert run(config) == 0.05  # back to the first: its average was kept


def test_a_reload_that_changes_the_probe_kind_does_not_reuse_the_average(tmp_path: Path) -> None:
    config, cache = tmp_path / "config.yaml", tmp_path / "cache.json"
    write(config, cache, "tcp")
    exporter = Exporter(ConfigSource(config, {}, {}, isolated=False))
    exporter.start()
    try:
        exporter.states["t"].record("r1", ProbeResult(0.05, {"connect": 0.05}))
        exporter.states["t"].tracker.flush()
        write(config, cache, "https")
        assert exporter.reload() is None
        assert exporter.states["t"].tracker.get_latency("r1") is None
    finally:
        exporter.stop()


def test_the_key_reads_back_from_the_right() -> None:
    assert cache_prefix(TargetInfo("eu:public", "bedrock-runtime", "https")) == "eu:public:bedrock-runtime:https"


def test_an_https_target_switched_to_warm_or_cold_starts_afresh(tmp_path: Path) -> None:
    """A warm (kept-alive) or cold (whole new connection) EMA is not a ttfb EMA: each has its own key."""
    config, cache = tmp_path / "config.yaml", tmp_path / "cache.json"
    write(config, cache, "https")
    assert run(config, record=0.05) is None
    write(config, cache, "https", measure="cold")
    assert run(config, record=0.2) is None
    write(config, cache, "https", measure="warm")
    assert run(config) is None
    write(config, cache, "https", measure="ttfb")  # the default, spelled out: the same key as before
    assert run(config) == 0.05
    assert cache_prefix(TargetInfo("t", "s", "https", measure="warm")) == "t:s:https+warm"
    assert cache_prefix(TargetInfo("t", "s", "https", measure="ttfb")) == "t:s:https"
