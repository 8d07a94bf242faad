"""The region simulator works: RTTs on the packets, HTTPS through it, run-time changes, teardown, fallback.

Timing checks are sanity only ("about N ms"); the accuracy numbers live in docs/NETSIM.md (calibrate module).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from region_latency_devkit.netsim import RegionSimulator, RegionSpec, netns
from region_latency_devkit.netsim.calibrate import connect_times

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]



@pytest.fixture(scope="session")
def needs_netns() -> None:
    """Skip (with the reason) where this process cannot make namespaces and TUNs: not root, or not permitted."""
    ok, reason = netns.availability()
    if not ok:
        pytest.skip(f"needs network namespaces + TUN devices: {reason}")


def median_connect(sim: RegionSimulator, region: str, n: int = 7) -> float:
    return statistics.median(sim.call_in_client(connect_times, sim.address(region), 443, n, 0.001))


def assert_about(measured: float, rtt: float) -> None:
    """The simulator adds ~0.1 ms on an idle machine; allow more for a busy CI box, never less than the RTT."""
    assert rtt - 0.0005 <= measured <= rtt + 0.005, f"measured {measured * 1e3:.2f} ms for a {rtt * 1e3:g} ms RTT"


@pytest.fixture(scope="module")
def sim(needs_netns: None) -> Iterator[RegionSimulator]:
    regions = {"us-east-1": RegionSpec(rtt=0.050), "eu-west-1": RegionSpec(rtt=0.010),
               "ap-south-1": RegionSpec(rtt=0.010), "sa-east-1": RegionSpec(rtt=0.005)}
    with RegionSimulator(regions, mode="netns") as s:
        yield s


def test_50ms_region_connects_in_about_50ms(sim: RegionSimulator) -> None:
    assert sim.mode == "netns"
    assert_about(median_connect(sim, "us-east-1"), 0.050)
    stats = sim.stats()
    assert stats.forwarded > 0 and stats.regions["us-east-1"]["packets"] > 0
    assert stats.lateness_p50 is not None and stats.lateness_p50 < 0.001


def test_two_regions_keep_their_own_rtt(sim: RegionSimulator) -> None:
    assert_about(median_connect(sim, "eu-west-1"), 0.010)
    assert_about(median_connect(sim, "us-east-1", n=5), 0.050)


def test_https_request_with_the_ca(sim: RegionSimulator) -> None:
    def request() -> tuple[httpx.Response, float]:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(sim.ca_file))) as client:
            t0 = time.perf_counter()
            response = client.get(sim.endpoint_url("eu-west-1") + "/model/x/invoke")
            return response, time.perf_counter() - t0

    response, elapsed = sim.call_in_client(request)
    assert response.status_code == 403
    assert response.headers["x-sim-region"] == "eu-west-1"
    assert response.json()["message"] == "Missing Authentication Token"
    assert elapsed >= 3 * 0.010  # connect + TLS 1.3 handshake + request: three round trips at least
    assert sim.endpoint_url("eu-west-1") == f"https://{sim.address('eu-west-1')}"
    assert sim.server_stats()["eu-west-1"]["requests"] >= 1


def test_run_in_client_runs_a_command_inside_the_client_namespace(sim: RegionSimulator) -> None:
    code = (f"import socket; s = socket.create_connection(({sim.address('sa-east-1')!r}, 80), timeout=2); "
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100).split(b'\\r\\n')[0].decode())")
    proc = sim.run_in_client([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=20)[0].strip() == "HTTP/1.1 403 Forbidden"
    # The root namespace has no simulator address. (Never probe 198.19.x.y from it: without the namespaces
    # the packets would follow the default route off this machine.)
    assert "198.18." not in netns.ip("-o", "addr").stdout and "198.19." not in netns.ip("-o", "addr").stdout


def test_set_rtt_takes_effect(sim: RegionSimulator) -> None:
    assert_about(median_connect(sim, "ap-south-1", n=5), 0.010)
    sim.set_rtt("ap-south-1", 0.060)
    try:
        assert sim.spec("ap-south-1").rtt == 0.060
        assert_about(median_connect(sim, "ap-south-1", n=5), 0.060)
    finally:
        sim.set_rtt("ap-south-1", 0.010)


def test_loss_1_makes_connects_time_out_and_the_region_can_come_back(sim: RegionSimulator) -> None:
    def connect(timeout: float) -> None:
        with socket.create_connection((sim.address("sa-east-1"), 443), timeout=timeout):
            pass

    sim.set_region("sa-east-1", loss=1.0)
    try:
        with pytest.raises(TimeoutError):
            sim.call_in_client(connect, 0.3)
        assert sim.stats().regions["sa-east-1"]["lost"] >= 1
    finally:
        sim.set_region("sa-east-1", loss=0.0)
    sim.call_in_client(connect, 2.0)


def _our_namespaces(pid: int) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(f"{netns.PREFIX}-{pid}-")]


@pytest.mark.usefixtures("needs_netns")
def test_teardown_leaves_nothing_behind_even_after_an_exception() -> None:
    before = set(_our_namespaces(os.getpid()))
    with pytest.raises(RuntimeError, match="boom"), RegionSimulator({"r": RegionSpec(rtt=0.001)}) as s:
        names = [s.client_netns, s.regions_netns]
        workers = s.worker_pids
        assert len(workers) == 2
        ca_dir = s.ca_file.parent
        assert all(n in netns.list_names() for n in names)
        raise RuntimeError("boom")
    assert set(_our_namespaces(os.getpid())) == before
    assert not ca_dir.exists()
    for pid in workers:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped: the worker is gone
    links = netns.ip("-o", "link").stdout
    assert "simc0" not in links and "simr0" not in links  # the root namespace never had them anyway


@pytest.mark.usefixtures("needs_netns")
def test_leftovers_of_dead_simulators_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"{netns.PREFIX}-{dead.pid}-1-c"
    netns.ip("netns", "add", leftover)
    try:
        with RegionSimulator({"r": RegionSpec(rtt=0.001)}):
            assert leftover not in netns.list_names()
    finally:
        netns.delete(leftover)


def test_proxy_fallback_delays_data_but_not_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    with RegionSimulator({"slow": RegionSpec(rtt=0.040)}, mode="proxy") as s:
        assert s.mode == "proxy" and s.client_netns is None
        assert "CANNOT delay TCP handshakes" in caplog.text
        url = s.endpoint_url("slow")
        assert url.startswith("https://127.0.0.1:")
        t0 = time.perf_counter()
        with socket.create_connection((s.address("slow"), s.port("slow")), timeout=2):
            connect = time.perf_counter() - t0
        with httpx.Client(verify=ssl.create_default_context(cafile=str(s.ca_file))) as client:
            t0 = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - t0
        assert response.status_code == 403 and response.headers["x-sim-region"] == "slow"
        assert connect < 0.020
        assert elapsed >= 2 * 0.040  # TLS 1.3 handshake + request, each one delayed round trip
        assert s.stats().forwarded > 0


@pytest.mark.usefixtures("needs_netns")
def test_cli_prints_endpoints_as_json_and_exits_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "region_latency_devkit.netsim", "--region", "us-east-1=20ms",
                           "--region", "eu-west-1=80ms,jitter=1ms", "--json", "--duration", "0.2"],
                          capture_output=True, text=True, timeout=30, check=True)
    info = json.loads(proc.stdout)
    assert info["mode"] == "netns"
    assert info["regions"]["eu-west-1"]["rtt"] == 0.080 and info["regions"]["eu-west-1"]["jitter"] == 0.001
    assert info["regions"]["us-east-1"]["endpoint_url"].startswith("https://198.19.")
    assert info["client_netns"] not in netns.list_names()
