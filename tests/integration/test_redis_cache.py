"""The tracker and the exporter persisting to a real redis-server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from region_latency.cache import CacheError
from region_latency.cache.redis import RedisCache
from region_latency.tracker import CACHE_KEY, RegionLatencyTracker
from tests.integration.test_exporter_process import DELAYS, exporter_config, wait_for_order
from tests.support.exporter import ExporterProcess, write_config
from tests.support.redis_server import RedisServer, redis_binary
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_binary() is None, reason="redis-server not installed (./test.sh installs it as root)"),
]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def test_tracker_round_trip_through_redis(redis_server: RedisServer) -> None:
    first = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="t:"))
    first.update_latency("eu-west-1", 0.02)
    first.update_latency("us-east-1", 0.09)
    first.close()
    raw = redis.Redis.from_url(redis_server.url).get("t:" + CACHE_KEY)
    assert raw is not None and b'"metrics"' in raw
    second = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="t:"))
    assert second.get_sorted_regions(["us-east-1", "eu-west-1"]) == ["eu-west-1", "us-east-1"]
    assert second.get_sample_count("us-east-1") == 1


def test_garbage_under_the_key_starts_empty(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    redis.Redis.from_url(redis_server.url).set("g:" + CACHE_KEY, b"\xff not json")
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="g:"))
    assert tracker.regions() == []
    assert "not valid JSON" in caplog.text


def test_unreachable_redis_is_a_warning_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(CacheError, match="redis"):
        cache.get(CACHE_KEY)
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=cache, save_interval=0)
        tracker.update_latency("r", 0.1)
    assert tracker.get_latency("r") == 0.1
    assert "could not read" in caplog.text and "could not save" in caplog.text


def test_exporter_restarts_from_a_redis_cache(tmp_path: Path, redis_server: RedisServer,
                                              local_servers: ServerGroup) -> None:
    endpoints = {region: local_servers.https(Reply(status=403, delay=delay)).url for region, delay in DELAYS.items()}
    document = exporter_config(tmp_path, endpoints, local_servers.ca.ca_file)
    document["cache"] = {"type": "redis", "url": redis_server.url}
    config = write_config(tmp_path / "config.yaml", document)
    exporter = ExporterProcess(config)
    try:
        exporter.wait_healthy()
        ranks = wait_for_order(exporter)
    finally:
        assert exporter.stop() == 0
    document["targets"][0]["interval"] = "1h"
    again = ExporterProcess(write_config(tmp_path / "again.yaml", document))
    try:
        again.wait_healthy()
        assert again.get("/-/ready").status_code == 200
        assert again.by_region("region_latency_rank") == ranks
    finally:
        assert again.stop() == 0
