"""Exporter.reload in-process: a good file is applied, a bad one (or one changing `listen`/`cache`) is refused with
one line and the running configuration stays; loads go through the child process (region_latency.resolve) unless
the source says otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from region_latency.app import ConfigSource, Exporter


def document(listen: str = "127.0.0.1:0", cache: str = "none", regions: tuple[str, ...] = ("r1",)) -> str:
    target = {"name": "t", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
              "endpoints": {r: "https://127.0.0.1:1" for r in regions}, "interval": "10s", "timeout": "1s"}
    return yaml.safe_dump({"listen": listen, "cache": cache, "targets": [target]})


@pytest.fixture(params=[True, False], ids=["isolated", "in-process"])
def exporter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Exporter]:
    path = tmp_path / "config.yaml"
    path.write_text(document())
    running = Exporter(ConfigSource(path, {}, {}, isolated=request.param))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_reload_applies_a_good_file_and_refuses_a_bad_one(exporter: Exporter) -> None:
    path = Path(str(exporter.source.path))
    path.write_text(document(regions=("r1", "r2")))
    assert exporter.reload() is None
    assert exporter.config.targets[0].region_names == ("r1", "r2")

    path.write_text("targets: [{service: bedrok-runtime}]\n")
    error = exporter.reload()
    assert error is not None and error.startswith(f"{path}: targets[0].service: unknown service 'bedrok-runtime'")
    assert "\n" not in error

    path.write_text(document(listen="127.0.0.1:1", regions=("r1", "r2")))
    assert exporter.reload() == "listen: changing the listen address (127.0.0.1:0 -> 127.0.0.1:1) needs a restart"
    path.write_text(document(cache="file", regions=("r1", "r2")))
    assert exporter.reload() == "cache: changing the cache needs a restart"
    assert exporter.config.targets[0].region_names == ("r1", "r2")
    assert list(exporter.states["t"].regions) == ["r1", "r2"]
