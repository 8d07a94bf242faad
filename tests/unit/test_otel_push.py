"""The OTLP push against a local OTLP/HTTP receiver: what it sends equals what /metrics shows for the same
snapshot; a dead, slow or refusing endpoint disturbs neither probing nor /metrics, is counted and logged once."""

from __future__ import annotations

import gc
import logging
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.exposition import generate_latest

from region_latency import __version__
from region_latency.app import ConfigSource, Exporter
from region_latency.export.exporter_families import ExporterStatusCollector
from region_latency.export.families import TARGET_FAMILIES, HistogramFamily
from region_latency.export.otel import SCOPE_NAME, OtlpExporter, OtlpStatusCollector, instrument_name
from region_latency.export.prometheus import build_registry
from region_latency.export.text import render_targets
from region_latency.metric_options import ALL_METRICS  # every family has series: the test compares them all
from region_latency.otlp_config import OtlpConfig
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.tracker import RegionLatencyTracker
from tests.support.otlp_receiver import OtlpReceiver, as_prometheus, attributes, metrics_samples
from tests.support.servers import free_port


class Clock:
    def __init__(self, now: float = 1_800_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def ok(latency: float, status: int | None = 403) -> ProbeResult:
    phases = {"dns": 0.0004, "connect": latency / 3, "tls": latency / 3, "ttfb": latency, "total": latency * 1.5}
    return ProbeResult(latency=latency, phases=phases, status=status)


class Targets:
    """Two targets with results of every kind (successes, failures by reason, an unmeasured region), recorded
    into TargetStates, each result also handed to `listeners` as the exporter does."""

    def __init__(self) -> None:
        clock = Clock()
        self.https = TargetState(TargetInfo("bedrock-runtime-https", "bedrock-runtime", "https"),
                                 ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"],
                                 RegionLatencyTracker(clock=clock), clock=clock, metrics=ALL_METRICS)
        self.tcp = TargetState(TargetInfo("vpc \"endpoint\"", "bedrock", "tcp"), ["eu-central-1", "us-west-2"],
                               RegionLatencyTracker(clock=clock), clock=clock, metrics=ALL_METRICS)
        self.listeners: list[Any] = []

    def record(self, state: TargetState, region: str, result: ProbeResult) -> None:
        state.record(region, result)
        for listener in self.listeners:
            listener(state.info, region, result)

    def feed(self, rounds: int = 3) -> None:
        for n in range(rounds):
            self.record(self.https, "eu-west-1", ok(0.011 + n * 0.001))
            self.record(self.https, "us-east-1", ok(0.090 - n * 0.002, status=200))
            self.record(self.https, "ap-south-1", ProbeResult.failure(ErrorKind.TIMEOUT, "deadline"))
            self.record(self.tcp, "eu-central-1", ProbeResult(latency=0.0051 * (n + 1), phases={"connect": 0.005}))
            self.record(self.tcp, "us-west-2", ok(0.25))
        self.record(self.https, "ap-south-1", ProbeResult.failure(ErrorKind.REFUSED, "refused"))
        self.record(self.tcp, "us-west-2", ProbeResult.failure(ErrorKind.DNS, "no such host"))

    def snapshots(self) -> list[TargetSnapshot]:
        return [self.https.snapshot(), self.tcp.snapshot()]


def push(receiver_url: str, snapshots: Any, **settings: Any) -> OtlpExporter:
    config = OtlpConfig.model_validate({"endpoint": receiver_url, "interval": "1h", "timeout": "2s", **settings})
    return OtlpExporter(config, snapshots)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def targets() -> Targets:
    return Targets()


def exported(receiver: OtlpReceiver, targets: Targets, **settings: Any) -> tuple[Any, list[TargetSnapshot]]:
    """One export of the fed targets; the snapshots it was made from (frozen: nothing records after `feed`)."""
    otlp = push(receiver.url, targets.snapshots, **settings)
    otlp.start()
    targets.listeners.append(otlp.on_result)
    targets.feed()
    try:
        assert otlp.collect_now()
        (request,) = receiver.wait_for(1)
    finally:
        otlp.stop()
    return request, targets.snapshots()


# --- what is sent ------------------------------------------------------------------------------------------------

def test_the_export_request_equals_metrics_for_the_same_snapshot(receiver: OtlpReceiver, targets: Targets) -> None:
    request, snapshots = exported(receiver, targets, histogram="explicit", vantage="eu-central-1a")
    assert request.path == "/v1/metrics"
    assert request.headers["content-type"] == "application/x-protobuf"
    text = render_targets(snapshots)
    assert as_prometheus(request) == metrics_samples(text)  # every series, label and value
    # names, units, descriptions: from the family table
    metrics = request.metrics()
    published = [family for family in TARGET_FAMILIES  # the flag has no data point while the targets are trusted
                 if family.name != "region_latency_measurements_untrusted"]
    assert sorted(metrics) == sorted(instrument_name(family) for family in published)
    for family in published:
        metric = metrics[instrument_name(family)]
        assert (metric.unit, metric.description) == (family.unit, family.help)
        kind = metric.WhichOneof("data")
        expected = {"gauge": "gauge", "counter": "sum", "histogram": "histogram"}[family.kind.value]
        assert kind == expected, family.name
        if kind == "sum":
            assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == 2  # cumulative
    assert metrics["region_latency.ema"].unit == "s"
    assert request.scopes() == [SCOPE_NAME]
    resource = request.resource()
    assert resource["service.name"] == "region-latency-exporter"
    assert resource["service.version"] == __version__
    assert resource["vantage"] == "eu-central-1a"
    assert resource["service.instance.id"]
    # semantic-convention attribute keys
    point = metrics["region_latency.probe_failures"].sum.data_points[0]
    assert set(attributes(point)) == {"region_latency.target", "rpc.service", "region_latency.probe",
                                      "cloud.region", "error.type"}


def test_the_comparison_sees_a_wrong_value(receiver: OtlpReceiver, targets: Targets) -> None:
    """The equality above can fail: one more sample after the export shows."""
    request, _ = exported(receiver, targets, histogram="explicit")
    targets.https.record("eu-west-1", ok(0.5))
    assert as_prometheus(request) != metrics_samples(render_targets(targets.snapshots()))


def test_the_exponential_histogram_has_the_same_count_sum_min_and_max(receiver: OtlpReceiver,
                                                                     targets: Targets) -> None:
    request, snapshots = exported(receiver, targets)  # histogram: exponential is the default
    family = next(f for f in TARGET_FAMILIES if isinstance(f, HistogramFamily))
    metric = request.metrics()[instrument_name(family)]
    assert metric.WhichOneof("data") == "exponential_histogram"
    expected = metrics_samples(render_targets(snapshots))
    points = metric.exponential_histogram.data_points
    assert len(points) == 4  # regions with at least one sample
    for point in points:
        attrs = attributes(point)
        labels = {"target": attrs["region_latency.target"], "service": attrs["rpc.service"],
                  "probe": attrs["region_latency.probe"], "region": attrs["cloud.region"]}
        key = frozenset(labels.items())
        assert point.count == expected[(f"{family.name}_count", key)]
        assert point.sum == pytest.approx(expected[(f"{family.name}_sum", key)], rel=1e-12)
        assert point.count == point.zero_count + sum(point.positive.bucket_counts)
        assert point.min <= point.max
    # the other families are still equal
    assert as_prometheus(request, histogram=False) == {
        key: value for key, value in expected.items() if not key[0].startswith(family.name)}


def test_gzip_compression(receiver: OtlpReceiver, targets: Targets) -> None:
    request, snapshots = exported(receiver, targets, compression="gzip", histogram="explicit")
    assert request.headers["content-encoding"] == "gzip"
    assert as_prometheus(request) == metrics_samples(render_targets(snapshots))


# --- /metrics is unaffected --------------------------------------------------------------------------------------

def _config_file(tmp_path: Path, otlp: dict[str, Any] | None) -> Path:
    target = {"name": "t", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
              "endpoints": {"eu-west-1": "https://127.0.0.1:1", "us-east-1": "https://127.0.0.1:1"},
              "interval": "600s", "timeout": "1s"}
    document: dict[str, Any] = {"listen": "127.0.0.1:0", "cache": "none", "targets": [target]}
    if otlp is not None:
        document["otlp"] = otlp
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _without_runtime(text: str) -> str:
    """The /metrics text without the families whose values move on their own (process, GC)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(name in line for name in ("process_", "python_gc_")))


def test_metrics_bytes_are_the_same_with_otlp_on_and_off(tmp_path: Path, receiver: OtlpReceiver) -> None:
    exporter = Exporter(ConfigSource(_config_file(tmp_path, {"endpoint": receiver.url, "interval": "1h"}), {}, {},
                                     isolated=False))
    assert exporter.otlp is not None
    exporter.web.start()
    exporter.otlp.start()
    try:
        state = exporter.states["t"]
        for n in range(3):
            for region, latency in (("eu-west-1", 0.01), ("us-east-1", 0.02)):
                result = ok(latency + n / 1000)
                state.record(region, result)
                exporter._on_result(state.info, region, result)
        assert exporter.otlp.collect_now()
        receiver.wait_for(1)
        host, port = exporter.web.address
        served = httpx.get(f"http://{host}:{port}/metrics").text
        snapshots = exporter.snapshots()
    finally:
        exporter.otlp.stop()
        exporter.web.stop()
    extra = [ExporterStatusCollector(exporter.status)]  # the reload and cache families, as the exporter has them
    without = generate_latest(build_registry(lambda: snapshots, extra=extra).registry).decode()
    assert served.startswith(render_targets(snapshots))  # the per-target families: byte for byte
    assert "otel_scope" not in served and "target_info" not in served
    # the whole answer: the same, plus only the push's own status families
    otlp_lines = [line for line in served.splitlines(keepends=True) if "region_latency_otlp_" in line]
    assert {line.split()[2] for line in otlp_lines if line.startswith("# TYPE")} == {
        "region_latency_otlp_exports_total", "region_latency_otlp_export_failures_total",
        "region_latency_otlp_last_success_timestamp_seconds", "region_latency_otlp_export_duration_seconds"}
    assert "region_latency_otlp_exports_total 1.0\n" in served
    assert "region_latency_otlp_export_failures_total 0.0\n" in served
    kept = "".join(line for line in served.splitlines(keepends=True) if line not in otlp_lines)
    assert _without_runtime(kept) == _without_runtime(without)


def test_otlp_is_off_by_default_and_the_sdk_not_loaded(tmp_path: Path) -> None:
    exporter = Exporter(ConfigSource(_config_file(tmp_path, None), {}, {}, isolated=False))
    assert exporter.otlp is None
    assert "region_latency_otlp" not in generate_latest(exporter.registry.registry).decode()


# --- a dead, slow or refusing endpoint ----------------------------------------------------------------------------

def _failures(otlp: OtlpExporter) -> int:
    return otlp.status.failures


def test_a_dead_endpoint_is_counted_logged_once_and_recovery_logged_once(
        targets: Targets, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    otlp = push(f"http://127.0.0.1:{port}", targets.snapshots, timeout="1s")
    caplog.set_level(logging.DEBUG)
    otlp.start()
    try:
        for n in range(5):
            targets.feed(1)  # probing carries on
            assert not otlp.collect_now()  # force_flush reports the failed export
            assert _failures(otlp) == n + 1
            assert render_targets(targets.snapshots())  # and /metrics too
        # the push's own warnings (the fed regions' state changes are logged by region_latency.state)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "region_latency.state"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].name == "region_latency.export.otel"
        assert f"OTLP export to http://127.0.0.1:{port}/v1/metrics failing" in warnings[0].getMessage()
        assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]  # the SDK's own: caught
        with OtlpReceiver(port) as receiver:
            assert otlp.collect_now()
            receiver.wait_for(1)
            assert otlp.collect_now()
        status = otlp.status
        assert (status.exports, status.failures, status.failing) == (7, 5, False)
        recovered = [r.getMessage() for r in caplog.records
                     if "recovered" in r.getMessage() and r.name == "region_latency.export.otel"]
        assert recovered == [f"OTLP export to http://127.0.0.1:{port}/v1/metrics recovered after 5 failed export(s)"]
    finally:
        otlp.stop()


def test_the_failure_count_is_on_metrics(targets: Targets) -> None:
    otlp = push(f"http://127.0.0.1:{free_port()}", targets.snapshots, timeout="1s")
    registry = build_registry(targets.snapshots)
    registry.runtime.register(OtlpStatusCollector(otlp))
    otlp.start()
    try:
        otlp.collect_now()
        otlp.collect_now()
        text = generate_latest(registry.registry).decode()
    finally:
        otlp.stop()
    assert "region_latency_otlp_export_failures_total 2.0\n" in text
    assert "region_latency_otlp_exports_total 2.0\n" in text
    assert "region_latency_otlp_last_success_timestamp_seconds" not in text


def test_memory_stays_flat_while_the_endpoint_is_down(targets: Targets, caplog: pytest.LogCaptureFixture) -> None:
    # the fed regions flip state every round, and pytest keeps every logged record: not the push's memory
    caplog.set_level(logging.CRITICAL, logger="region_latency.state")
    # 500ms: shorter than the SDK's first retry backoff (1 s +- 20 %), so each failed export ends at once
    otlp = push(f"http://127.0.0.1:{free_port()}", targets.snapshots, timeout="500ms")
    targets.listeners.append(otlp.on_result)
    otlp.start()
    try:
        for _ in range(20):  # warm up: connection pools, caches, the SDK's storages
            targets.feed(1)
            otlp.collect_now()
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(200):
                targets.feed(1)
                otlp.collect_now()
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert otlp.status.failures == 220
    finally:
        otlp.stop()
    # nothing is queued: 200 more failed exports (each of ~100 data points) hold on to less than 64 KiB
    assert after - before < 64 * 1024, after - before


def test_a_slow_endpoint_never_holds_up_probing_or_metrics(receiver: OtlpReceiver, targets: Targets) -> None:
    receiver.behaviour.hold = threading.Event()  # the receiver answers only when the test says so (or never)
    otlp = push(receiver.url, targets.snapshots, timeout="1s")
    targets.listeners.append(otlp.on_result)
    otlp.start()
    try:
        flushed: list[bool] = []
        pushing = threading.Thread(target=lambda: flushed.append(otlp.collect_now(timeout=30)))
        pushing.start()
        assert receiver.behaviour.held.wait(10)  # an export is in flight, held by the receiver
        generation = targets.https.snapshot().generation
        targets.feed(2)  # probe results are recorded (histogram included) while it waits
        assert targets.https.snapshot().generation > generation
        assert "region_latency_samples" in render_targets(targets.snapshots())
        assert pushing.is_alive()  # ... all of that while the export was still held
        pushing.join(30)
        assert flushed == [False]  # the export gave up after its timeout
        assert otlp.status.failures == 1
    finally:
        receiver.behaviour.hold.set()
        otlp.stop()


@pytest.mark.parametrize("status", [400, 503])
def test_a_refusing_endpoint_is_counted(receiver: OtlpReceiver, targets: Targets, status: int) -> None:
    receiver.behaviour.status = status  # 400: not retried; 503: retried with backoff until the timeout
    otlp = push(receiver.url, targets.snapshots, timeout="1s")
    otlp.start()
    try:
        assert not otlp.collect_now()
        assert otlp.status.failures == 1 and otlp.status.failing
    finally:
        otlp.stop()
    if status == 400:
        assert otlp.status.last_error == "Failed to export metrics batch code: 400, reason: Bad Request"
    assert len(receiver.received) >= 2  # the last push at stop() was tried as well


def test_stop_is_bounded_with_a_dead_endpoint(targets: Targets) -> None:
    otlp = push(f"http://127.0.0.1:{free_port()}", targets.snapshots, timeout="1s")
    otlp.start()
    otlp.stop(timeout=2)  # the last push fails; stop returns (no hang) and the status stays readable
    assert otlp.status.failing


def test_an_exporter_that_raises_is_counted_and_the_push_goes_on(targets: Targets) -> None:
    """Fault injection: the SDK's exporter raising (a bug, an encoding error) is one failed export, not the end of
    the reader thread."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class Broken(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("encoder exploded")
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    broken = Broken()
    otlp = OtlpExporter(OtlpConfig(endpoint="http://127.0.0.1:1", interval=3600), targets.snapshots,
                        exporter=broken)
    otlp.start()
    try:
        assert not otlp.collect_now()
        assert otlp.status.last_error == "RuntimeError: encoder exploded"
        assert otlp.collect_now()
        assert (otlp.status.exports, otlp.status.failures, otlp.status.failing) == (2, 1, False)
    finally:
        otlp.stop()
