"""/metrics is rendered once per snapshot generation (and max_age), whatever the number of scrapes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent.futures import Future

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from region_latency.export.metrics_cache import MAX_VARIANTS, MetricsCache
from region_latency.export.prometheus import ExporterRegistry, RegionLatencyCollector
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import Request, Response
from region_latency.export.text import render_targets
from region_latency.probes.base import ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class Counting(Collector):
    """A runtime collector that counts how often it is collected."""

    def __init__(self) -> None:
        self.collects = 0

    def collect(self) -> Iterator[Metric]:
        self.collects += 1
        family = GaugeMetricFamily("demo_value", "A value.", labels=["n"])
        family.add_metric(["1"], self.collects)
        yield family


def make_state() -> TargetState:
    return TargetState(TargetInfo("t", "bedrock", "tcp"), ["us-east-1"], RegionLatencyTracker(), PlainRanking(),
                       clock=lambda: 1000.0)


def exporter_registry(state: TargetState) -> tuple[ExporterRegistry, Counting]:
    counting = Counting()
    runtime = CollectorRegistry(auto_describe=True)
    runtime.register(counting)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RegionLatencyCollector(lambda: [state.snapshot()]))
    registry.register(runtime)
    counting.collects = 0  # registering collected it, to learn its names
    return ExporterRegistry(registry, runtime, lambda: [state.snapshot()]), counting


def cache(generation: list[int], clock: list[float]) -> tuple[MetricsCache, Counting, TargetState]:
    state = make_state()
    metrics, counting = exporter_registry(state)
    return MetricsCache(metrics, lambda: generation[0], max_age=1.0, clock=lambda: clock[0]), counting, state


def test_one_render_per_generation_and_format() -> None:
    generation, clock = [1], [100.0]
    metrics, counting, state = cache(generation, clock)
    first = metrics.get(None, None)
    assert metrics.get(None, None) == first
    assert metrics.cached(None, None) == first
    assert counting.collects == 1 and metrics.renders == 1
    assert first.headers[0] == ("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
    assert b'demo_value{n="1"} 1.0' in first.body
    assert b'region_latency_samples{probe="tcp",region="us-east-1",service="bedrock",target="t"} 0.0' in first.body
    runtime_text = generate_latest(counting).decode().replace("} 2.0", "} 1.0")  # that collect was the 2nd
    assert first.body.decode() == render_targets([state.snapshot()]) + runtime_text
    counting.collects = 1

    gzipped = metrics.get(None, "gzip")  # another variant: the same text, compressed
    assert ("Content-Encoding", "gzip") in gzipped.headers
    assert gzip.decompress(gzipped.body) == first.body
    assert counting.collects == 1 and metrics.renders == 1

    openmetrics = metrics.get(OPENMETRICS, "gzip")  # OpenMetrics only: prometheus_client renders it
    assert gzip.decompress(openmetrics.body).endswith(b"# EOF\n")
    assert counting.collects == 2

    state.record("us-east-1", ProbeResult(0.05, {"connect": 0.05}))
    generation[0] = 2  # a probe result or a re-ranking
    assert metrics.cached(None, None) is None
    body = metrics.get(None, None).body
    assert b'region_latency_samples{probe="tcp",region="us-east-1",service="bedrock",target="t"} 1.0' in body
    assert metrics.renders == 3  # text twice (two generations), OpenMetrics once
    assert counting.collects == 2  # the runtime part was still fresh


def test_max_age_bounds_staleness_of_the_runtime_part_only() -> None:
    generation, clock = [1], [100.0]
    metrics, counting, state = cache(generation, clock)
    metrics.get(None, "gzip")
    clock[0] += 0.9
    assert metrics.cached(None, "gzip") is not None
    assert counting.collects == 1
    clock[0] += 0.2
    fresh = metrics.cached(None, "gzip")  # over max_age: the runtime part is refreshed at once, without a worker
    assert fresh is not None and counting.collects == 2
    assert gzip.decompress(fresh.body).decode() == render_targets([state.snapshot()]) + generate_latest(
        counting).decode().replace("} 3.0", "} 2.0")  # one gzip stream: the per-target part, then the new runtime
    assert metrics.renders == 1  # the per-target families did not change: not rendered again
    with metrics._lock:  # a render under way: the event loop does not wait for it
        clock[0] += 2
        assert metrics.cached(None, "gzip") is None
    generation[0] = 2
    assert metrics.cached(None, "gzip") is None  # a new generation is rendered by a worker, not on the loop


def test_concurrent_scrapes_share_one_render() -> None:
    generation, clock = [1], [100.0]
    metrics, counting, _ = cache(generation, clock)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(metrics.get(PROMETHEUS_ACCEPT, "gzip").body))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.collects == 1 and metrics.renders == 1 and len(set(bodies)) == 1


def request(method: str = "GET", path: str = "/metrics", query: str = "", **headers: str) -> Request:
    return Request(method, path, query, {k.replace("_", "-").lower(): v for k, v in headers.items()})


def answer(app: ExporterApp, req: Request) -> Response:
    """What the server does: the loop's answer if there is one, else the worker's."""
    return app.respond_now(req) or app.respond(req)


def test_exporter_app_serves_metrics_from_the_cache_until_a_result_arrives() -> None:
    state = make_state()
    metrics, counting = exporter_registry(state)
    app = ExporterApp(metrics, WebHooks(snapshots=lambda: [state.snapshot()], ready=lambda: True,
                                        reload=Future), metrics_max_age=60.0)
    assert app.respond_now(request()) is None  # nothing rendered yet: a worker must
    assert answer(app, request()).status == 200
    assert app.respond_now(request()) is not None  # now the loop answers at once
    assert answer(app, request(accept=OPENMETRICS)).body.endswith(b"# EOF\n")
    assert not answer(app, request(accept=PROMETHEUS_ACCEPT)).body.endswith(b"# EOF\n")  # text, when accepted
    assert app.metrics_cache.renders == 2  # text once, OpenMetrics once
    state.record("us-east-1", ProbeResult(0.05, {"connect": 0.05}))
    assert app.respond_now(request()) is None
    answer(app, request())
    assert app.metrics_cache.renders == 3
    filtered = answer(app, request(query="name[]=demo_value"))
    assert filtered.status == 200 and filtered.body == b'# HELP demo_value A value.\n# TYPE demo_value gauge\n' \
        + f'demo_value{{n="1"}} {counting.collects}.0\n'.encode()
    assert answer(app, request(query="nme=x")).status == 400
    odd = answer(app, request(query="name[]=demo_value", accept="application/openmetrics-text; version=abc"))
    assert odd.status == 200 and odd.body.startswith(b"# HELP demo_value")
    assert answer(app, request(method="POST")).status == 405
    assert answer(app, request(method="OPTIONS")).status == 200
    assert answer(app, request(path="/nope")).status == 404
    assert answer(app, request(path="/-/reload")).status == 405
    assert answer(app, request(path="/-/healthy")).body == b"Healthy.\n"
    assert app.respond_now(request(path="/regions")) is None  # JSON is built on a worker
    assert answer(app, request(path="/regions", query="bad=1")).status == 400


def test_odd_accept_headers_get_an_answer_and_do_not_grow_the_cache() -> None:
    generation, clock = [1], [100.0]
    metrics, _, _ = cache(generation, clock)
    text = metrics.get(None, None)
    assert metrics.get("application/openmetrics-text; version=abc", None).body == text.body  # falls back to text
    for n in range(40):
        body = metrics.get(f"application/openmetrics-text; version=1.0.{n}", None).body
        assert body.endswith(b"# EOF\n")
    assert len(metrics._entries) <= MAX_VARIANTS
