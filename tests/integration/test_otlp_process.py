"""The real exporter process pushing over OTLP to a local receiver: the requests equal /metrics for the same
snapshot, headers and resource arrive, /metrics carries the push's own counts; a dead endpoint disturbs neither
probing nor /metrics, is logged once and counted, and does not hold up shutdown."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from region_latency.export.families import TARGET_FAMILIES
from tests.support.exporter import ExporterProcess, write_config
from tests.support.otlp_receiver import OtlpReceiver, SampleKey, as_prometheus, metrics_samples
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = pytest.mark.integration

DELAYS = {"eu-west-1": 0.010, "ap-south-1": 0.030, "us-east-1": 0.060}
SECRET = "Bearer pr0cess-s3cret"


def config(tmp_path: Path, servers: ServerGroup, otlp: dict[str, Any], interval: str) -> Path:
    endpoints = {region: servers.https(Reply(status=403, body="{}", delay=delay)).url
                 for region, delay in DELAYS.items()}
    target = {"service": "bedrock-runtime", "probe": "https", "regions": sorted(endpoints), "endpoints": endpoints,
              "interval": interval, "timeout": "900ms", "options": {"ca_file": servers.ca.ca_file}}
    return write_config(tmp_path / "config.yaml", {"cache": "none", "targets": [target], "otlp": otlp})


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def target_samples(text: str) -> dict[SampleKey, float]:
    """The per-target families of a /metrics text (not build info, not the push's own status)."""
    names = {family.name for family in TARGET_FAMILIES}
    return {key: value for key, value in metrics_samples(text).items()
            if re.sub(r"_(bucket|count|sum)$", "", key[0]) in names}


def test_the_process_pushes_what_metrics_shows(tmp_path: Path, local_servers: ServerGroup,
                                               receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20pr0cess-s3cret")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    # One sweep, then nothing changes for 10 minutes: every push after it shows the snapshot /metrics shows.
    path = config(tmp_path, local_servers, {"endpoint": receiver.url, "interval": "300ms", "histogram": "explicit",
                                            "vantage": "ci-runner"}, interval="600s")
    exporter = ExporterProcess(path)
    try:
        exporter.wait_healthy()
        exporter.wait_for(lambda: len(exporter.by_region("region_latency_samples")) == len(DELAYS)
                          and min(exporter.by_region("region_latency_samples").values()) == 1, 30, "one sweep")
        text = exporter.metrics_text()
        seen = len(receiver.received)
        request = receiver.wait_for(seen + 2)[-1]  # a push made after the sweep
        assert as_prometheus(request) == target_samples(text)
        assert request.headers["authorization"] == SECRET
        resource = request.resource()
        assert (resource["service.name"], resource["vantage"], resource["deployment.environment"]) == (
            "region-latency-exporter", "ci-runner", "test")
        assert request.metrics()["region_latency.ema"].unit == "s"
        served = exporter.metrics_text()
        assert "otel_scope" not in served and "target_info" not in served
        # the push's own families are runtime families: re-rendered when the answer is over 1 s old
        exporter.wait_for(lambda: exporter.samples()["region_latency_otlp_exports_total"][0][1] >= 2, 10, "exports")
        assert exporter.samples()["region_latency_otlp_export_failures_total"][0][1] == 0
    finally:
        assert exporter.stop() == 0
    log = exporter.log()
    assert "Traceback" not in log and "pr0cess-s3cret" not in log
    assert "pushing metrics over OTLP (http/protobuf)" in log


def test_a_dead_endpoint_changes_nothing_but_its_counter(tmp_path: Path, local_servers: ServerGroup) -> None:
    port = free_port()
    path = config(tmp_path, local_servers, {"endpoint": f"http://127.0.0.1:{port}", "interval": "200ms",
                                            "timeout": "150ms"}, interval="1s")
    exporter = ExporterProcess(path)
    try:
        exporter.wait_healthy()

        def failures() -> float:
            return exporter.samples().get("region_latency_otlp_export_failures_total", [({}, 0.0)])[0][1]

        exporter.wait_for(lambda: failures() >= 3, 30, "3 failed exports")
        rss_early = exporter.samples()["process_resident_memory_bytes"][0][1]
        samples_early = min(exporter.by_region("region_latency_samples").values())
        exporter.wait_for(lambda: min(exporter.by_region("region_latency_samples").values()) >= samples_early + 3,
                          30, "3 more samples per region")  # probing carries on
        exporter.wait_for(lambda: failures() >= 30, 60, "30 failed exports")
        rss_late = exporter.samples()["process_resident_memory_bytes"][0][1]
        print(f"RSS with the OTLP endpoint down: {rss_early / 2**20:.1f} MiB after 3 failed exports, "
              f"{rss_late / 2**20:.1f} MiB after {failures():.0f}")
        assert rss_late - rss_early < 4 * 2**20  # nothing queued (allocator noise only)
        started = time.monotonic()
    finally:
        code = exporter.stop()
    assert code == 0
    assert time.monotonic() - started < 15  # the last push at shutdown is bounded
    log = exporter.log()
    failing = [line for line in log.splitlines() if "OTLP export to" in line and "failing" in line]
    assert len(failing) == 1, log
    assert "opentelemetry" not in log.replace("region_latency", "")  # the SDK's own per-export lines: caught
