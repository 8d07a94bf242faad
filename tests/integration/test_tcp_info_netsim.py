"""The kernel-timed connect (TCP_INFO tcpi_rtt) on a real delay line: it reads the handshake's round trip, and
a handshake whose SYN was retransmitted falls back to the stamps (Karn's rule: no clean kernel sample)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from region_latency.probes import ProbeResult, Target, get_probe
from region_latency.probes.base import ConnectTiming
from region_latency_devkit.netsim import RegionSimulator, RegionSpec, netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120),
              pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="TCP_INFO is Linux's")]

RTT = 0.030


@pytest.fixture(scope="module")
def sim() -> Iterator[RegionSimulator]:
    ok, reason = netns.availability()
    if not ok:
        pytest.skip(f"needs network namespaces + TUN devices: {reason}")
    regions = {"clean-1": RegionSpec(rtt=RTT), "lossy-1": RegionSpec(rtt=RTT, loss=0.35)}
    with RegionSimulator(regions, mode="netns") as s:
        yield s


def _probes(address: str, n: int, timeout: float) -> list[ProbeResult]:
    probe = get_probe("tcp")
    return [probe(Target("test", "r", f"tcp://{address}:443"), timeout) for _ in range(n)]


def test_tcpi_rtt_is_the_handshake_round_trip(sim: RegionSimulator) -> None:
    """Within a fraction of a millisecond of the line's RTT (never below it): not tcpi_rttvar (half), not
    tcpi_rto (over 200 ms), which a wrong offset would read."""
    results = sim.call_in_client(_probes, sim.address("clean-1"), 7, 5.0)
    assert all(r.ok and r.connect_timing == ConnectTiming.KERNEL for r in results), results
    for result in results:
        assert result.latency is not None
        assert RTT - 0.0002 <= result.latency <= RTT + 0.005, result.latency


def test_a_retransmitted_syn_falls_back_to_the_stamps(sim: RegionSimulator) -> None:
    """With 35% of packets lost, some handshakes need the SYN again (initial RTO 1 s): those are timed by the
    stamps (about 1 s + RTT, which is what the connect took), the clean ones by the kernel."""
    results = [r for r in sim.call_in_client(_probes, sim.address("lossy-1"), 14, 10.0) if r.ok]
    kernel = [r for r in results if r.connect_timing == ConnectTiming.KERNEL]
    stamped = [r for r in results if r.connect_timing == ConnectTiming.STAMPS]
    assert kernel and stamped, [(r.latency, r.connect_timing) for r in results]
    assert all(r.latency is not None and r.latency < RTT + 0.005 for r in kernel)
    assert all(r.latency is not None and r.latency >= 0.9 for r in stamped)


def _family_results(url: str) -> list[tuple[str | None, str | None]]:
    out = []
    for kind in ("tcp", "https"):
        for options in ({"ip_version": 6}, {}):
            result = get_probe(kind)(Target("test", "r", url, options), 3.0)
            out.append((kind if options else f"{kind} (any family)", None if result.error is None
                        else str(result.error)))
    return out


def test_a_family_this_host_cannot_route_is_reported_as_unavailable(sim: RegionSimulator) -> None:
    """The client namespace has IPv4 routes only: an IPv6 address asked for with ip_version 6 is a family that
    is not available from here (ENETUNREACH), not a failing region; without ip_version it stays a connection
    failure, as before."""
    results = dict(sim.call_in_client(_family_results, "https://[2001:db8::1]:443"))
    assert results == {"tcp": "ip_family_unavailable", "tcp (any family)": "connection",
                       "https": "ip_family_unavailable", "https (any family)": "connection"}
