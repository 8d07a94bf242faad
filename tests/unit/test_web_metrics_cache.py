"""/metrics is rendered once per snapshot generation (and max_age), whatever the number of scrapes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from region_latency.export.web import ExporterApp, MetricsCache, WebHooks, _ThreadingWSGIServer
from region_latency.probes.base import ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class Counting(Collector):
    """A collector that counts how often it is collected."""

    def __init__(self) -> None:
        self.collects = 0

    def collect(self) -> Iterator[Metric]:
        self.collects += 1
        family = GaugeMetricFamily("demo_value", "A value.", labels=["n"])
        family.add_metric(["1"], self.collects)
        yield family


def cache(generation: list[int], clock: list[float]) -> tuple[MetricsCache, Counting]:
    registry = CollectorRegistry(auto_describe=False)
    counting = Counting()
    registry.register(counting)
    return MetricsCache(registry, lambda: generation[0], max_age=1.0, clock=lambda: clock[0]), counting


def test_one_render_per_generation_and_format() -> None:
    generation, clock = [1], [100.0]
    metrics, counting = cache(generation, clock)
    first = metrics.get(None, None)
    assert metrics.get(None, None) == first
    assert counting.collects == 1
    assert first[0] == [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]
    assert b"demo_value{n=\"1\"} 1.0" in first[1]

    headers, body = metrics.get(OPENMETRICS, "gzip")  # another variant: its own render
    assert ("Content-Encoding", "gzip") in headers
    assert gzip.decompress(body).endswith(b"# EOF\n")
    assert counting.collects == 2

    generation[0] = 2  # a probe result or a re-ranking
    assert b"demo_value{n=\"1\"} 3.0" in metrics.get(None, None)[1]
    assert metrics.renders == counting.collects == 3


def test_max_age_bounds_staleness() -> None:
    generation, clock = [1], [100.0]
    metrics, counting = cache(generation, clock)
    metrics.get(None, None)
    clock[0] += 0.9
    metrics.get(None, None)
    assert counting.collects == 1
    clock[0] += 0.2
    metrics.get(None, None)
    assert counting.collects == 2


def test_concurrent_scrapes_share_one_render() -> None:
    generation, clock = [1], [100.0]
    metrics, counting = cache(generation, clock)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(metrics.get(OPENMETRICS, "gzip")[1]))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.collects == 1 and len(set(bodies)) == 1


def call(app: ExporterApp, method: str = "GET", query: str = "", **headers: str) -> tuple[str, bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
        got["status"] = status

    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": method, "QUERY_STRING": query, **headers}
    body = b"".join(app(environ, start_response))
    return got["status"], body


def test_exporter_app_serves_metrics_from_the_cache_until_a_result_arrives() -> None:
    state = TargetState(TargetInfo("t", "bedrock", "tcp"), ["us-east-1"], RegionLatencyTracker(), PlainRanking(),
                        clock=lambda: 1000.0)
    registry = CollectorRegistry(auto_describe=False)
    counting = Counting()
    registry.register(counting)
    app = ExporterApp(registry, WebHooks(snapshots=lambda: [state.snapshot()], ready=lambda: True,
                                         reload=lambda: None), metrics_max_age=60.0)
    assert call(app)[0] == "200 OK"
    assert call(app, HTTP_ACCEPT=OPENMETRICS)[1].endswith(b"# EOF\n")
    assert call(app)[0] == "200 OK"
    assert counting.collects == 2  # text and OpenMetrics, once each
    assert not call(app, HTTP_ACCEPT=PROMETHEUS_ACCEPT)[1].endswith(b"# EOF\n")  # text, when accepted
    assert counting.collects == 2  # ... and it is the cached text rendering
    state.record("us-east-1", ProbeResult(0.05, {"connect": 0.05}))
    call(app)
    assert counting.collects == 3
    assert call(app, query="name[]=demo_value")[0] == "200 OK"  # filtered scrapes go to prometheus_client's app
    assert app.metrics_cache.renders == 3
    assert call(app, method="POST")[0].startswith("405")


def test_listen_backlog_takes_a_burst_of_scrapers() -> None:
    assert _ThreadingWSGIServer.request_queue_size >= 128
