"""otlp.protocol: grpc (the `grpc` extra) against a local OTLP/gRPC receiver; without the extra, a clear error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

from region_latency import otlp_config
from region_latency.config import ConfigError, load_config
from region_latency.export.otel import OtlpExporter
from region_latency.export.text import render_targets
from region_latency.probes.base import ProbeResult
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker
from tests.support.otlp_receiver import Received, as_prometheus, metrics_samples


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, list[tuple[Received, dict[str, str]]]]]:
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    received: list[tuple[Received, dict[str, str]]] = []
    lock = threading.Lock()

    class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
            metadata = dict(context.invocation_metadata())
            with lock:
                received.append((Received("grpc", {}, request.ByteSize(), request), metadata))
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(0)


def test_grpc_push_equals_metrics(grpc_receiver: tuple[str, list[tuple[Received, dict[str, str]]]]) -> None:
    url, received = grpc_receiver
    config = load_config(env={"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                              "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t0ken"}).otlp
    assert config.url == url  # gRPC takes the endpoint as is (no /v1/metrics)
    state = TargetState(TargetInfo("t", "bedrock-runtime", "https"), ["eu-west-1", "us-east-1"],
                        RegionLatencyTracker())
    pushing = OtlpExporter(config.model_copy(update={"histogram": "explicit"}), lambda: [state.snapshot()])
    pushing.start()
    try:
        for region, latency in (("eu-west-1", 0.01), ("us-east-1", 0.05), ("eu-west-1", 0.02)):
            result = ProbeResult(latency=latency, phases={"ttfb": latency}, status=403)
            state.record(region, result)
            pushing.on_result(state.info, region, result)
        assert pushing.collect_now(), pushing.status
    finally:
        pushing.stop()
    request, metadata = received[0]
    assert metadata["authorization"] == "Bearer t0ken"
    assert as_prometheus(request) == metrics_samples(render_targets([state.snapshot()]))


def test_grpc_without_the_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_config, "grpc_available", lambda: False)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert str(caught.value) == ("OTEL_EXPORTER_OTLP_PROTOCOL: otlp: protocol grpc needs the grpc extra: "
                                 "pip install 'region-latency-exporter[grpc]'")
    # off, the extra is not needed
    assert not load_config(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).otlp.active
