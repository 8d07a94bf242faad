"""A real Prometheus scraping a real exporter process: the ranking arrives and answers PromQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_exporter_process import DELAYS, exporter_config
from tests.support.exporter import ExporterProcess, write_config
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.servers import Reply, ServerGroup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed (./test.sh installs it as root)"),
]


@pytest.fixture
def scraped(tmp_path: Path, local_servers: ServerGroup) -> Iterator[tuple[ExporterProcess, PrometheusServer]]:
    endpoints = {region: local_servers.https(Reply(status=403, delay=delay)).url for region, delay in DELAYS.items()}
    config = write_config(tmp_path / "config.yaml", exporter_config(tmp_path, endpoints, local_servers.ca.ca_file))
    exporter = ExporterProcess(config)
    prometheus = None
    try:
        exporter.wait_healthy()
        prometheus = PrometheusServer(tmp_path / "prom", [f"127.0.0.1:{exporter.port}"])
        yield exporter, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


def test_prometheus_scrapes_the_ranking_and_answers_fastest_region(
    scraped: tuple[ExporterProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped
    up = prometheus.wait_for("up", lambda r: r and r[0]["value"][1] == "1")
    assert up[0]["metric"]["job"] == "region-latency"

    fastest = prometheus.wait_for(
        "region_latency_rank == 1", lambda r: [s["metric"]["region"] for s in r] == ["eu-west-1"])
    assert fastest[0]["metric"]["target"] == "bedrock-runtime-https"

    by_label = prometheus.wait_for('region_latency_ranking_info{rank="1"}', lambda r: len(r) == 1)
    assert by_label[0]["metric"]["region"] == "eu-west-1"

    ema = {s["metric"]["region"]: float(s["value"][1])
           for s in prometheus.query("region_latency_ema_seconds")}
    assert set(ema) == set(DELAYS)
    assert sorted(ema, key=ema.__getitem__) == ["eu-west-1", "ap-south-1", "us-east-1"]

    def ordered_medians(result: list[dict]) -> bool:
        medians = {s["metric"]["region"]: float(s["value"][1]) for s in result}
        # NaN (no increase yet in the window) compares false, so this waits for real quantiles
        return len(medians) == 3 and medians["eu-west-1"] < medians["ap-south-1"] < medians["us-east-1"]

    prometheus.wait_for(
        "histogram_quantile(0.5, sum by (region, le) (rate(region_latency_sample_seconds_bucket[1m])))",
        ordered_medians)

    assert prometheus.query("sum(region_latency_probe_success)")[0]["value"][1] == "3"
    assert prometheus.query("region_latency_build_info")
