"""The tracker and the exporter persisting to a real redis-server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from region_latency.cache import CACHE_KEY, CacheError
from region_latency.cache.redis import RedisCache
from region_latency.tracker import RegionLatencyTracker
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


@pytest.mark.parametrize(("garbage", "reason"), [(b"\xff not json", "not valid UTF-8"),
                                                 (b'{"metrics": {"a": 0.1}', "not valid JSON"),
                                                 (b"[" * 5000 + b"]" * 5000, "nested deeper")])
def test_garbage_under_the_key_is_kept_aside_and_saving_works(garbage: bytes, reason: str, redis_server: RedisServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("g:" + CACHE_KEY, garbage)
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="g:"), save_interval=0)
    assert tracker.regions() == []
    assert reason in caplog.text and "g:region_latencies.corrupt" in caplog.text
    assert client.lrange("g:" + CACHE_KEY + ".corrupt", 0, -1) == [garbage]
    tracker.update_latency("r", 0.1)
    assert json.loads(client.get("g:" + CACHE_KEY) or b"")["metrics"] == {"r": 0.1}
    assert client.lrange("g:" + CACHE_KEY + ".corrupt", 0, -1) == [garbage]  # kept once


def test_one_bad_region_in_redis_drops_only_itself(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_server.url)
    original = (b'{"metrics": {"a": 0.1, "b": -0.5, "c": 0.3, "d": ' + b"9" * 400 + b'}, "counts": {"a": 3, "c": 2},'
                b' "last_sample_at": {"c": NaN}, "updated_at": 1700000000}')
    client.set("s:" + CACHE_KEY, original)
    with caplog.at_level(logging.WARNING):
        tracker = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="s:"), save_interval=0)
    assert {r: tracker.get_sample_count(r) for r in tracker.regions()} == {"a": 3}
    for region in ("'b'", "'c'", "'d'"):
        assert region in caplog.text
    tracker.update_latency("e", 0.2)
    assert set(json.loads(client.get("s:" + CACHE_KEY) or b"")["metrics"]) == {"a", "e"}
    assert client.lrange("s:" + CACHE_KEY + ".corrupt", 0, -1) == [original]


def test_corrupt_copies_in_redis_are_bounded(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for i in range(8):
        client.set("b:" + CACHE_KEY, b"broken %d" % i)
        tracker = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="b:"), save_interval=0)
        tracker.update_latency("r", 0.1)
    assert client.lrange("b:" + CACHE_KEY + ".corrupt", 0, -1) == [b"broken %d" % i for i in (7, 6, 5, 4, 3)]


def test_a_full_redis_is_retried_counted_and_logged_once(redis_server: RedisServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # every write is refused: "OOM command not allowed"
    try:
        with caplog.at_level(logging.INFO):
            tracker = RegionLatencyTracker(cache=RedisCache(redis_server.url, key_prefix="f:"), save_interval=0)
            for _ in range(50):
                tracker.update_latency("r", 0.1)
                tracker.flush()
    finally:
        client.config_set("maxmemory", "0")
    assert tracker.saver is not None
    assert tracker.saver.status.saves_failed_total >= 50 and tracker.saver.status.last_save_ok is False
    assert caplog.text.count("could not save latency metrics") == 1
    with caplog.at_level(logging.INFO):
        tracker.flush()
    assert tracker.saver.status.last_save_ok is True
    assert json.loads(client.get("f:" + CACHE_KEY) or b"")["counts"] == {"r": 50}
    assert caplog.text.count("works again") == 1


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
