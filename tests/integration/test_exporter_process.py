"""The real exporter process against local HTTPS endpoints with distinct, known delays."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter import ExporterProcess, run_cli, write_config
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = pytest.mark.integration

# Server-side delays per simulated region; the https probe's latency is time to first byte.
DELAYS = {"eu-west-1": 0.010, "ap-south-1": 0.045, "us-east-1": 0.090}
TARGET = "bedrock-runtime-https"


@pytest.fixture
def endpoints(local_servers: ServerGroup) -> dict[str, str]:
    return {region: local_servers.https(Reply(status=403, body='{"message":"denied"}', delay=delay)).url
            for region, delay in DELAYS.items()}


def exporter_config(tmp_path: Path, endpoints: dict[str, str], ca_file: str, **extra: Any) -> dict[str, Any]:
    target = {
        "service": "bedrock-runtime",
        "probe": "https",
        "regions": sorted(endpoints),
        "endpoints": endpoints,
        "interval": "1s",
        "timeout": "900ms",
        "options": {"ca_file": ca_file},
        # every optional series on (the whole ranking, every phase, status codes): what this test reads
        "metrics": {"phases": True, "region_state": "all", "ranking_info": "all", "probe_details": True},
    }
    return {"cache": {"type": "file", "path": str(tmp_path / "cache.json")}, "targets": [target], **extra}


@pytest.fixture
def started(tmp_path: Path, endpoints: dict[str, str], local_servers: ServerGroup) -> Iterator[ExporterProcess]:
    config = write_config(tmp_path / "config.yaml", exporter_config(tmp_path, endpoints, local_servers.ca.ca_file))
    exporter = ExporterProcess(config, extra_args=["--web.enable-lifecycle"])
    try:
        exporter.wait_healthy()
        yield exporter
    finally:
        exporter.stop()


def wait_for_samples(exporter: ExporterProcess, n: int, timeout: float = 30) -> None:
    """Until every region has `n` samples and all of them are ranked (the policy may want a minimum)."""
    def enough() -> bool:
        counts = exporter.by_region("region_latency_samples")
        ranked = exporter.by_region("region_latency_rank")
        return len(counts) == len(DELAYS) and min(counts.values()) >= n and len(ranked) == len(DELAYS)

    exporter.wait_for(enough, timeout, f"at {n} samples per region, all ranked")


def wait_for_order(exporter: ExporterProcess, timeout: float = 30) -> dict[str, float]:
    """Until the ranks follow the delays (hysteresis may hold an early #1 for a few evaluations)."""
    expected = sorted(DELAYS, key=DELAYS.__getitem__)

    def ordered() -> bool:
        ranks = exporter.by_region("region_latency_rank")
        return sorted(ranks, key=ranks.__getitem__) == expected

    exporter.wait_for(ordered, timeout, f"ranked {expected}")
    return exporter.by_region("region_latency_rank")


def test_metrics_publish_ema_samples_and_ranks_ordered_like_the_delays(started: ExporterProcess) -> None:
    wait_for_samples(started, 3)
    ranks = wait_for_order(started)
    assert ranks == {"eu-west-1": 1, "ap-south-1": 2, "us-east-1": 3}
    emas = started.by_region("region_latency_ema_seconds")
    for region, delay in DELAYS.items():
        assert delay <= emas[region] < delay + 0.030, (region, emas[region])
    samples = started.samples()
    ranking = {labels["rank"]: labels["region"] for labels, _ in samples["region_latency_ranking_info"]}
    assert ranking == {"1": "eu-west-1", "2": "ap-south-1", "3": "us-east-1"}
    success = started.by_region("region_latency_probe_success")
    assert success == dict.fromkeys(DELAYS, 1.0)
    statuses = started.by_region("region_latency_probe_http_status_code")
    assert set(statuses.values()) == {403.0}
    phases = {(labels["region"], labels["phase"]) for labels, _ in samples["region_latency_probe_duration_seconds"]}
    assert {phase for _, phase in phases} >= {"connect", "tls", "ttfb", "total"}
    counts = {labels["region"]: v for labels, v in samples["region_latency_sample_seconds_count"]}
    assert min(counts.values()) >= 3
    build = samples["region_latency_build_info"][0][0]
    assert build["version"]
    assert all(labels["target"] == TARGET and labels["service"] == "bedrock-runtime"
               for labels, _ in samples["region_latency_ema_seconds"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (./test.sh installs it as root)")
def test_everything_served_passes_promtool_check_metrics(started: ExporterProcess) -> None:
    wait_for_samples(started, 1)
    text = started.metrics_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


def test_regions_json_status_page_and_health_endpoints(started: ExporterProcess) -> None:
    wait_for_samples(started, 2)
    wait_for_order(started)
    assert started.get("/-/ready").status_code == 200
    document = started.regions()
    (target,) = document["targets"]
    assert target["name"] == TARGET
    assert target["fastest"] == "eu-west-1"
    assert [r["region"] for r in target["regions"]] == ["eu-west-1", "ap-south-1", "us-east-1"]
    assert all(r["state"] == "healthy" and r["samples"] >= 2 for r in target["regions"])
    assert started.get("/regions", params={"service": "s3"}).json()["targets"] == []
    assert started.get("/regions", params={"bogus": "1"}).status_code == 400
    page = started.get("/")
    assert page.status_code == 200 and "eu-west-1" in page.text and "/metrics" in page.text
    assert started.get("/nope").status_code == 404
    assert started.get("/-/reload").status_code == 405


def test_sigterm_exits_zero_and_a_restart_serves_the_cached_ranking_at_once(
    tmp_path: Path, started: ExporterProcess, local_servers: ServerGroup
) -> None:
    wait_for_samples(started, 3)
    before = wait_for_order(started)
    counts_before = started.by_region("region_latency_samples")
    assert started.stop() == 0
    assert "Traceback" not in started.log()
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert set(cache[f"{TARGET}:bedrock-runtime:https/region_latencies"]["metrics"]) == set(DELAYS)

    # Restart with a long interval: whatever is served at once comes from the cache, not from new probes.
    document = exporter_config(tmp_path, {r: u for r, u in cache_endpoints(started).items()}, local_servers.ca.ca_file)
    document["targets"][0]["interval"] = "1h"
    config = write_config(tmp_path / "restart.yaml", document)
    again = ExporterProcess(config)
    try:
        again.wait_healthy()
        assert again.get("/-/ready").status_code == 200
        assert again.by_region("region_latency_rank") == before
        restored = again.by_region("region_latency_samples")
        assert all(restored[r] >= counts_before[r] for r in DELAYS)
    finally:
        assert again.stop() == 0


def cache_endpoints(exporter: ExporterProcess) -> dict[str, str]:
    import yaml

    return yaml.safe_load(exporter.config.read_text())["targets"][0]["endpoints"]


def test_reload_keeps_tracker_state_and_a_bad_reload_keeps_the_running_config(
    tmp_path: Path, started: ExporterProcess, local_servers: ServerGroup
) -> None:
    wait_for_samples(started, 3)
    before = started.by_region("region_latency_samples")
    endpoints = dict(cache_endpoints(started))
    endpoints["eu-central-1"] = local_servers.https(Reply(status=403, delay=0.02)).url
    write_config(started.config, exporter_config(tmp_path, endpoints, local_servers.ca.ca_file))
    started.signal(signal.SIGHUP)
    started.wait_for(lambda: "eu-central-1" in started.by_region("region_latency_samples"), 15, "reloaded")
    after = started.by_region("region_latency_samples")
    assert all(after[r] >= before[r] for r in DELAYS), (before, after)

    started.config.write_text("targets: [{service: bedrock-runtime, probe: carrier-pigeon}]\n")
    response = started.client.post("/-/reload")
    assert response.status_code == 500
    assert "probe" in response.text and "\n" not in response.text.strip()
    assert "eu-central-1" in started.by_region("region_latency_samples")
    assert started.proc.poll() is None


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - service: bedrock-runtime\n    interval: soon\n")
    result = run_cli("serve", "--config", str(bad), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "interval" in lines[0], result.stderr

    missing = run_cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_port_in_use_is_a_clean_error(tmp_path: Path, started: ExporterProcess) -> None:
    result = run_cli("serve", "--listen", f"127.0.0.1:{started.port}", "--cache", "none")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: cannot listen on"), result.stderr
    assert "Traceback" not in result.stderr


def test_one_shot_probe_prints_a_ranked_table_and_json(tmp_path: Path, endpoints: dict[str, str],
                                                         local_servers: ServerGroup) -> None:
    config = write_config(tmp_path / "c.yaml", exporter_config(tmp_path, endpoints, local_servers.ca.ca_file))
    as_json = run_cli("probe", "--config", str(config), "-n", "3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (target,) = json.loads(as_json.stdout)["targets"]
    assert [row["region"] for row in target["regions"]] == ["eu-west-1", "ap-south-1", "us-east-1"]
    assert [row["rank"] for row in target["regions"]] == [1, 2, 3]
    assert all(row["ok"] == 3 and row["errors"] == 0 for row in target["regions"])
    for row in target["regions"]:
        assert DELAYS[row["region"]] <= row["median_seconds"] < DELAYS[row["region"]] + 0.03

    table = run_cli("probe", "--config", str(config), "-n", "1")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(TARGET)
    assert [line.split()[1] for line in lines[2:]] == ["eu-west-1", "ap-south-1", "us-east-1"]


def test_probe_flags_errors_are_one_line(tmp_path: Path) -> None:
    result = run_cli("probe", "--service", "bedrock-runtime", "--endpoint", "no-equals-sign")
    assert result.returncode == 2 and "REGION=URL" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("probe", "--service", "bedrok-runtime")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
