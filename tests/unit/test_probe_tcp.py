"""The tcp probe against real local sockets: connect timing, DNS kept apart, failure kinds."""

from __future__ import annotations

import socket
import time

import pytest

from region_latency.probes import ErrorKind, Target, get_probe
from region_latency.probes.base import Deadline, parse_endpoint, timed_connect
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
        sent, arrived = timed_connect(sock, ("127.0.0.1", listener.port), 2.0)
        assert 0 <= arrived - sent < 1.0
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        timed_connect(sock, ("127.0.0.1", free_port()), 2.0)
