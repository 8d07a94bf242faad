"""A real exporter process on a damaged cache file: it starts, serves what was good, and keeps the rest aside.

The first run writes a real cache file; the test damages it the ways issue 10 found (a 400-digit EMA, a NaN
timestamp, invalid UTF-8), and a second run (probing hourly, so the cache is what it serves) must start,
answer /regions and /metrics without NaN, and on SIGTERM replace the file with valid JSON, a copy of the
damaged one kept beside it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_exporter_process import DELAYS, exporter_config, wait_for_samples
from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = pytest.mark.integration


def first_run(tmp_path: Path, local_servers: ServerGroup) -> tuple[dict[str, Any], Path]:
    endpoints = {region: local_servers.https(Reply(status=403, delay=delay)).url for region, delay in DELAYS.items()}
    document = exporter_config(tmp_path, endpoints, local_servers.ca.ca_file)
    exporter = ExporterProcess(write_config(tmp_path / "config.yaml", document))
    try:
        exporter.wait_healthy()
        wait_for_samples(exporter, 3)
    finally:
        assert exporter.stop() == 0
    document["targets"][0]["interval"] = "1h"
    return document, Path(document["cache"]["path"])


def second_run(tmp_path: Path, document: dict[str, Any]) -> tuple[ExporterProcess, str]:
    exporter = ExporterProcess(write_config(tmp_path / "again.yaml", document))
    exporter.wait_healthy()
    regions = exporter.get("/regions")
    assert regions.status_code == 200  # was: 500, "Out of range float values are not JSON compliant"
    metrics = exporter.metrics_text()
    values = [line.rsplit(" ", 1)[1] for line in metrics.splitlines() if line and not line.startswith("#")]
    assert all(math.isfinite(float(value)) for value in values)  # was: NaN timestamps
    return exporter, metrics


def test_damaged_regions_are_dropped_alone_and_kept_aside(tmp_path: Path, local_servers: ServerGroup) -> None:
    document, cache = first_run(tmp_path, local_servers)
    text = cache.read_text()
    text = re.sub(r'"us-east-1":[0-9.e-]+', '"us-east-1":' + "9" * 400, text, count=1)  # its EMA
    text = re.sub(r'("last_sample_at":\{[^}]*"ap-south-1":)[0-9.e+-]+', r"\1NaN", text, count=1)
    cache.write_text(text)
    damaged = cache.read_bytes()
    exporter, _ = second_run(tmp_path, document)  # was: OverflowError on every start
    try:
        assert exporter.by_region("region_latency_samples").keys() >= {"eu-west-1"}
        assert exporter.get("/-/ready").status_code == 200  # eu-west-1 came from the cache
    finally:
        assert exporter.stop() == 0
    log = exporter.log()
    assert "'us-east-1'" in log and "'ap-south-1'" in log and ".corrupt-" in log
    saved = json.loads(cache.read_text())  # strict JSON again
    assert all(isinstance(v, dict) for v in saved.values())
    assert [p.read_bytes() for p in tmp_path.glob("cache.json.corrupt-*")] == [damaged]


def test_a_file_that_is_not_utf8_is_kept_and_replaced(tmp_path: Path, local_servers: ServerGroup) -> None:
    """It starts empty; what it measures is saved over the damaged file, kept aside once, restart after restart."""
    document, cache = first_run(tmp_path, local_servers)
    damaged = cache.read_bytes()[:-1] + b',"note":"\xff"}'
    cache.write_bytes(damaged)
    document["targets"][0]["interval"] = "1s"  # it starts empty: let it measure, so there is something to save
    exporter, _ = second_run(tmp_path, document)
    try:
        wait_for_samples(exporter, 2)
    finally:
        assert exporter.stop() == 0  # SIGTERM flushes
    assert "not valid UTF-8" in exporter.log()
    saved = json.loads(cache.read_bytes().decode("utf-8"))  # was: never replaced, every save failed
    assert saved
    assert [p.read_bytes() for p in tmp_path.glob("cache.json.corrupt-*")] == [damaged]


def test_restarts_on_a_damaged_file_keep_one_copy(tmp_path: Path, local_servers: ServerGroup) -> None:
    document, cache = first_run(tmp_path, local_servers)
    dead = f"https://127.0.0.1:{free_port()}"
    document["targets"][0]["endpoints"] = {region: dead for region in DELAYS}  # failures only: nothing to save
    damaged = b"{not json"
    cache.write_bytes(damaged)
    for _ in range(3):
        exporter, _ = second_run(tmp_path, document)
        assert exporter.stop() == 0
    assert cache.read_bytes() == damaged
    assert [p.read_bytes() for p in tmp_path.glob("cache.json.corrupt-*")] == [damaged]
