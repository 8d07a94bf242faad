"""scripts/demo_prometheus.py: the demo exporter and a real Prometheus with the rules; the URLs it prints work,
the ranking and an alert show up, and Ctrl-C stops both processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from tests.support.prometheus import prometheus_binary
from tests.support.repo_files import REPO
from tests.support.servers import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed (./test.sh installs it as root)"),
]


def test_demo_shows_ranking_and_alerts_and_stops_on_ctrl_c(tmp_path: Any) -> None:
    exporter_port, prometheus_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo_prometheus.py"), "--proxy", "--interval", "1s",
         "--exporter-port", str(exporter_port), "--prometheus-port", str(prometheus_port), "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    try:
        _wait(lambda: any(line.startswith("prometheus:") for line in lines), proc, "the URLs printed")
        text = "".join(lines)
        assert f"{prometheus}/alerts" in text and f"http://127.0.0.1:{exporter_port}/" in text

        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {group["name"] for group in groups} == {"region-latency.recording", "region-latency.baseline",
                                                       "region-latency.vantage-points", "region-latency.alerts"}

        def fastest() -> list[Any]:
            return _query(prometheus, 'target:region_latency_fastest_ema_seconds{target="demo-https"}')

        result = _wait(fastest, proc, "a fastest region")
        assert result[0]["metric"]["region"] in ("eu-central-1", "eu-west-1")  # 6 ms and 24 ms round trips

        def failing() -> list[Any]:
            alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            return [alert for alert in alerts if alert["labels"]["alertname"] == "RegionLatencyRegionFailing"
                    and alert["labels"]["region"] == "sa-east-1"]

        assert _wait(failing, proc, "RegionLatencyRegionFailing for the black-hole region")[0]["state"] in (
            "pending", "firing")
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    for port in (exporter_port, prometheus_port):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def _query(prometheus: str, promql: str) -> list[Any]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    result: list[Any] = body["data"]["result"]
    return result


def _wait(probe: Any, proc: subprocess.Popen[str], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"demo exited with {proc.returncode} before {what}"
        try:
            result = probe()
            if result:
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"demo: no {what} within {timeout}s")
