"""The plan's `measure_latency` over real sockets: a local HTTPS endpoint stands in for a region."""

from __future__ import annotations

import pytest

from region_latency import RegionLatencyTracker
from tests.support.servers import Reply, ServerGroup, free_port


def test_measure_latency_feeds_the_ema(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(status=403, delay=0.03))
    tracker = RegionLatencyTracker()
    options = {"ca_file": local_servers.ca.ca_file}
    first = tracker.measure_latency("eu-west-1", server.url, options=options)
    second = tracker.measure_latency("eu-west-1", server.url, options=options)
    assert first is not None and second is not None
    assert 0.03 <= first < 0.2 and 0.03 <= second < 0.2
    assert tracker.get_latency("eu-west-1") == pytest.approx((first + second) / 2)
    assert tracker.get_sample_count("eu-west-1") == 2


def test_failed_measurement_returns_none_and_is_counted(local_servers: ServerGroup) -> None:
    tracker = RegionLatencyTracker()
    tracker.update_latency("us-east-1", 0.05)
    assert tracker.measure_latency("us-east-1", f"https://127.0.0.1:{free_port()}", timeout=1) is None
    stats = tracker.snapshot().regions["us-east-1"]
    assert (stats.ema, stats.samples, stats.consecutive_failures, stats.last_error) == (0.05, 1, 1, "refused")


def test_tcp_kind_and_bad_arguments(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    tracker = RegionLatencyTracker()
    assert tracker.measure_latency("r", listener.url, probe="tcp") is not None
    with pytest.raises(ValueError, match="unknown probe kind"):
        tracker.measure_latency("r", listener.url, probe="icmp")
    with pytest.raises(ValueError, match="unknown tcp probe option"):
        tracker.measure_latency("r", listener.url, probe="tcp", options={"bogus": 1})


def test_service_name_resolves_through_botocore() -> None:
    tracker = RegionLatencyTracker()
    result = tracker.probe_once("us-east-1", "bedrock-runtime", probe="tcp", timeout=2)
    # No machine here reaches AWS: the name does not resolve, and that is a counted dns failure.
    assert result.latency is None and str(result.error) in {"dns", "timeout", "connection", "refused"}
    assert tracker.snapshot().regions["us-east-1"].failures_total == 1
