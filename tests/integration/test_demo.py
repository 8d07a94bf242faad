"""`region-latency-exporter demo`: the exporter over simulated regions ranks them by their true RTT."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.support.exporter import exporter_command
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

RTTS = {"eu-west-1": "5ms", "us-east-1": "40ms", "ap-south-1": "90ms"}


@pytest.mark.parametrize("mode", ["auto", "proxy"])
def test_demo_ranks_simulated_regions_by_their_round_trip(mode: str) -> None:
    if mode == "auto" and os.geteuid() != 0:
        pytest.skip("the packet-level simulator needs root (network namespaces)")
    port = free_port()
    args = ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "1s"]
    args += [arg for region, rtt in RTTS.items() for arg in ("--region", f"{region}={rtt}")]
    args += ["--proxy"] if mode == "proxy" else []
    proc = subprocess.Popen(exporter_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        order: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/regions", timeout=5).json()["targets"]
                # https in both modes (the proxy delays requests, not TCP handshakes); tcp too with packet delays
                names = ("demo-https", "demo-tcp") if mode == "auto" else ("demo-https",)
                orders = [[r["region"] for r in t["regions"] if r["rank"]] for t in targets if t["name"] in names]
                order = orders[0] if len(set(map(tuple, orders))) == 1 else []
                if order == list(RTTS):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert order == list(RTTS), order
        ema = {r["region"]: r["ema_seconds"] for t in targets if t["name"] == "demo-tcp" for r in t["regions"]}
        if mode == "auto":  # packets are delayed: a TCP connect takes one round trip
            assert 0.004 < ema["eu-west-1"] < 0.010
            assert 0.039 < ema["us-east-1"] < 0.050
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "mode: netns" in stderr if mode == "auto" else "mode: proxy" in stderr
