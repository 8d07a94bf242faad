"""The tcp probe against real local sockets: connect timing, DNS kept apart, failure kinds."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

import pytest

from region_latency.probes import ErrorKind, Target, base, get_probe
from region_latency.probes.base import ConnectTiming, Deadline, parse_endpoint, tcp_info_rtt, timed_connect
from region_latency.probes.tcp import connect_error_kind
from tests.support.servers import ServerGroup, free_port

probe = get_probe("tcp")


def target(url: str, **options: object) -> Target:
    return Target(service="test", region="local-1", url=url, options=options)


def test_connect_time_is_the_latency(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    result = probe(target(listener.url), 2.0)
    assert result.ok, result
    assert result.error is None
    assert result.latency == result.phases["connect"]
    assert 0 < result.latency < 1.0
    assert "dns" not in result.phases  # an IP literal needs no resolution
    assert result.phases["total"] >= result.latency


def test_dns_is_timed_separately(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    result = probe(target(f"tcp://localhost:{listener.port}", ip_version=4), 2.0)
    assert result.ok, result
    assert result.phases["dns"] >= 0
    assert result.latency == result.phases["connect"]
    assert result.phases["total"] >= result.phases["dns"] + result.phases["connect"]


def test_https_url_and_port_option(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    result = probe(target("https://127.0.0.1", port=listener.port), 2.0)
    assert result.ok, result


def test_refused() -> None:
    started = time.perf_counter()
    result = probe(target(f"tcp://127.0.0.1:{free_port()}"), 2.0)
    assert not result.ok
    assert result.error is ErrorKind.REFUSED
    assert "refused" in result.detail.lower()
    assert time.perf_counter() - started < 1.0


def test_unresolvable_name() -> None:
    result = probe(target("https://something.invalid"), 2.0)
    assert result.error is ErrorKind.DNS
    assert "something.invalid" in result.detail
    assert "connect" not in result.phases


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("tcp://127.0.0.1", {}, "needs a port"),
        ("", {}, "non-empty"),
        ("https://127.0.0.1", {"port": 70000}, "port"),
        ("https://127.0.0.1", {"ip_version": 5}, "ip_version"),
    ],
)
def test_bad_targets_raise_clear_errors(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        probe(target(url, **options), 1.0)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "1", True])
def test_bad_timeouts_raise(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        probe(target("tcp://127.0.0.1:1"), timeout)  # type: ignore[arg-type]


def test_deadline_counts_down() -> None:
    deadline = Deadline(0.05)
    assert 0 < deadline.remaining() <= 0.05
    time.sleep(0.06)
    assert deadline.expired
    assert deadline.remaining() == 0.0


def test_parse_endpoint_keeps_path_and_host_header() -> None:
    endpoint = parse_endpoint("https://bedrock.us-east-1.amazonaws.com:8443/x?y=1")
    assert (endpoint.host, endpoint.port, endpoint.path) == ("bedrock.us-east-1.amazonaws.com", 8443, "/x?y=1")
    assert endpoint.host_header() == "bedrock.us-east-1.amazonaws.com:8443"
    assert parse_endpoint("https://example.com").host_header() == "example.com"
    assert parse_endpoint("example.com:80").scheme == "tcp"


def test_timed_connect_stamps_the_kernel_events_and_reports_failures(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    with socket.socket() as sock:
        span = timed_connect(sock, ("127.0.0.1", listener.port), 2.0)
        assert 0 <= span.stamped < 1.0
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        timed_connect(sock, ("127.0.0.1", free_port()), 2.0)


needs_tcp_info = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="TCP_INFO is Linux's")


@needs_tcp_info
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_kernel_times_the_connect_on_loopback(local_servers: ServerGroup, family: socket.AddressFamily,
                                                  host: str) -> None:
    """On Linux the connect phase is the kernel's tcpi_rtt, and the result says so."""
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen(8)
        port = server.getsockname()[1]
        url = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        result = probe(target(url), 2.0)
    assert result.ok, result
    assert result.connect_timing == ConnectTiming.KERNEL
    assert result.latency == result.phases["connect"]
    assert 0 < result.latency < 0.1  # a loopback handshake: microseconds, whole microseconds from the kernel
    assert round(result.latency * 1e6, 6) == round(result.latency * 1e6)


@needs_tcp_info
def test_timed_connect_carries_both_clocks(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    with socket.socket() as sock:
        span = timed_connect(sock, ("127.0.0.1", listener.port), 2.0)
    assert span.kernel is not None and span.timing == ConnectTiming.KERNEL
    assert span.seconds == span.kernel
    assert span.stamped >= 0


def test_without_tcp_info_the_stamps_time_the_connect(local_servers: ServerGroup,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the platform has no TCP_INFO (macOS, Windows), today's stamps are used, and the result says so."""
    monkeypatch.setattr(base, "_TCP_INFO", None)
    listener = local_servers.tcp()
    result = probe(target(listener.url), 2.0)
    assert result.ok, result
    assert result.connect_timing == ConnectTiming.STAMPS
    assert result.latency == result.phases["connect"] > 0


def _tcp_info(rtt_us: int, retransmits: int = 0, total_retrans: int = 0, length: int = 104) -> bytes:
    """A struct tcp_info laid out as include/uapi/linux/tcp.h has it, zero except the fields named."""
    raw = bytearray(232)
    raw[2] = retransmits
    struct.pack_into("=I", raw, 68, rtt_us)
    struct.pack_into("=I", raw, 72, rtt_us // 2)  # tcpi_rttvar right after: reading the wrong field shows
    struct.pack_into("=I", raw, 100, total_retrans)
    return bytes(raw[:length])


def test_tcp_info_rtt_reads_tcpi_rtt_and_refuses_retransmitted_handshakes() -> None:
    assert tcp_info_rtt(_tcp_info(20_500)) == pytest.approx(0.0205)
    assert tcp_info_rtt(_tcp_info(20_500, retransmits=1)) is None  # the SYN is being retransmitted
    assert tcp_info_rtt(_tcp_info(20_500, total_retrans=1)) is None  # it was: Karn's rule, no clean sample
    assert tcp_info_rtt(_tcp_info(0)) is None  # no sample at all
    assert tcp_info_rtt(_tcp_info(20_500, length=100)) is None  # an older kernel's shorter struct


@needs_tcp_info
def test_tcp_info_layout_matches_the_kernels() -> None:
    """tcpi_rtt is the u32 at byte 68: on a fresh loopback connection tcpi_rto (byte 8) is at least the kernel's
    minimum RTO (200 ms) and tcpi_snd_mss (byte 16) a loopback MSS, while tcpi_rtt is microseconds."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    rto_us, snd_mss = struct.unpack_from("=II", raw, 8)[0], struct.unpack_from("=I", raw, 16)[0]
    assert rto_us >= 200_000
    assert snd_mss > 1000
    rtt = tcp_info_rtt(raw)
    assert rtt is not None and 0 < rtt < 0.1


def test_an_address_of_the_other_family_is_family_unavailable_not_a_dns_failure(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    result = probe(target(listener.url, ip_version=6), 2.0)  # 127.0.0.1: no IPv6 address to use
    assert result.error == ErrorKind.FAMILY_UNAVAILABLE
    assert "is not an IPv6 address" in result.detail


@pytest.mark.parametrize("code", [errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT])
def test_connect_errors_that_say_the_family_is_unusable_here(code: int) -> None:
    """Only when the target asked for the family: otherwise they stay what they were (a connection failure)."""
    error = OSError(code, os.strerror(code))
    assert connect_error_kind(error, family_asked=True) == ErrorKind.FAMILY_UNAVAILABLE
    assert connect_error_kind(error) == ErrorKind.CONNECTION
    unreachable_host = OSError(errno.EHOSTUNREACH, "No route to host")  # the region's trouble, not the family's
    assert connect_error_kind(unreachable_host, family_asked=True) == ErrorKind.CONNECTION
