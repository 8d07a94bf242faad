"""Passive instrumentation of an application's own boto3 client, feeding a real RegionLatencyTracker."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from region_latency import RegionLatencyTracker
from region_latency.passive import instrument
from tests.support.servers import ServerGroup, aws_error, fake_aws, free_port, json_reply

pytestmark = pytest.mark.usefixtures("dummy_aws_credentials")
REGION = "eu-west-3"


def bedrock(url: str, **config: object) -> BaseClient:
    """An application's client: default retries unless told otherwise."""
    return boto3.client("bedrock", region_name=REGION, endpoint_url=url, config=Config(**config))


class RecordingTracker(RegionLatencyTracker):
    """A real tracker that also keeps the raw samples, to check which window each one measured."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[float] = []
        self._samples_lock = threading.Lock()

    def update_latency(self, region: str, latency: float) -> None:
        with self._samples_lock:
            self.samples.append(latency)
        super().update_latency(region, latency)


def test_calls_feed_the_tracker_and_results_are_unchanged(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws(delay=0.03))
    client = bedrock(server.url)
    tracker = RegionLatencyTracker()
    with instrument(client, tracker) as handle:
        assert handle.attached
        responses = [client.list_foundation_models() for _ in range(3)]
    assert all(r["modelSummaries"] == [] for r in responses)
    assert tracker.get_sample_count(REGION) == 3
    assert 0.025 <= tracker.get_latency(REGION) < 0.5


def test_detach_stops_measuring(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    client = bedrock(server.url)
    tracker = RegionLatencyTracker()
    handle = instrument(client, tracker)
    client.list_foundation_models()
    handle.detach()
    handle.detach()  # idempotent
    client.list_foundation_models()
    assert not handle.attached
    assert tracker.get_sample_count(REGION) == 1


def test_error_answers_are_round_trips_and_still_raise(local_servers: ServerGroup) -> None:
    server = local_servers.http(aws_error(403, "AccessDeniedException"))
    client = bedrock(server.url)
    tracker = RegionLatencyTracker()
    with instrument(client, tracker), pytest.raises(ClientError, match="AccessDenied"):
        client.list_foundation_models()
    assert tracker.get_sample_count(REGION) == 1


def test_each_retry_attempt_is_its_own_sample(local_servers: ServerGroup) -> None:
    server = local_servers.http(aws_error(503, "ServiceUnavailableException"))
    client = bedrock(server.url, retries={"mode": "standard", "total_max_attempts": 2})
    tracker = RegionLatencyTracker()
    with instrument(client, tracker), pytest.raises(ClientError):
        client.list_foundation_models()
    assert len(server.requests) == 2
    assert tracker.get_sample_count(REGION) == 2


def test_failed_sends_are_recorded_as_failures() -> None:
    client = bedrock(f"http://127.0.0.1:{free_port()}", retries={"total_max_attempts": 1})
    tracker = RegionLatencyTracker()
    with instrument(client, tracker), pytest.raises(EndpointConnectionError):
        client.list_foundation_models()
    stats = tracker.snapshot().regions[REGION]
    assert stats.samples == 0
    assert stats.failures_total == 1
    assert stats.last_error == "refused"


def test_region_override(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    client = bedrock(server.url)
    tracker = RegionLatencyTracker()
    with instrument(client, tracker, region="vpc-endpoint-1"):
        client.list_foundation_models()
    assert tracker.get_sample_count("vpc-endpoint-1") == 1
    assert tracker.get_sample_count(REGION) == 0


def test_not_a_client_is_rejected() -> None:
    with pytest.raises(TypeError, match="boto3"):
        instrument(object(), RegionLatencyTracker())


def test_threads_sharing_a_client_pair_their_own_send_and_receive(local_servers: ServerGroup) -> None:
    """Slow and fast calls interleave on one client: every sample must match its own call's delay."""
    slow = 0.2
    routes = {
        ("GET", "/foundation-models"): json_reply({"modelSummaries": []}, delay=slow),
        ("GET", "/custom-models"): json_reply({"modelSummaries": []}),
    }
    server = local_servers.http(fake_aws(routes))
    client = bedrock(server.url, max_pool_connections=8)
    tracker = RecordingTracker()
    threads, calls_per_thread = 4, 6
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for call in range(calls_per_thread):
                if (index + call) % 2:
                    client.list_foundation_models()
                else:
                    client.list_custom_models()
        except BaseException as exc:
            errors.append(exc)

    with instrument(client, tracker):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
    assert errors == []
    total = threads * calls_per_thread
    assert tracker.get_sample_count(REGION) == total
    slow_samples = [s for s in tracker.samples if s >= slow * 0.9]
    assert len(slow_samples) == total // 2
