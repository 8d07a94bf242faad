"""A local OTLP/HTTP receiver for tests: decodes the real export requests with opentelemetry-proto.

It answers 200 with an empty ExportMetricsServiceResponse, or what the test asks for (a status code, a hold until
released), and keeps every request: path, headers, raw body size and the decoded request.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body_size: int  # as sent (compressed, if it was)
    request: ExportMetricsServiceRequest

    def metrics(self) -> dict[str, Metric]:
        return {metric.name: metric for rm in self.request.resource_metrics for sm in rm.scope_metrics
                for metric in sm.metrics}

    def resource(self) -> dict[str, Any]:
        (rm,) = self.request.resource_metrics
        return {kv.key: value_of(kv.value) for kv in rm.resource.attributes}

    def scopes(self) -> list[str]:
        return [sm.scope.name for rm in self.request.resource_metrics for sm in rm.scope_metrics]


def value_of(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def attributes(point: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in point.attributes}


@dataclass
class Behaviour:
    status: int = 200
    hold: threading.Event | None = None  # requests wait for it (up to hold_max seconds) before answering
    hold_max: float = 30.0
    held: threading.Event = field(default_factory=threading.Event)  # set when a request starts waiting


class OtlpReceiver:
    """`with OtlpReceiver() as receiver:` ... `receiver.url` is the base endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                size = len(body)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                behaviour = receiver.behaviour
                if behaviour.hold is not None:
                    behaviour.held.set()
                    behaviour.hold.wait(behaviour.hold_max)
                with receiver._cond:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      size, request))
                    receiver._cond.notify_all()
                answer = ExportMetricsServiceResponse().SerializeToString() if behaviour.status == 200 else b""
                try:
                    self.send_response(behaviour.status)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.behaviour.hold is not None:
            self.behaviour.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} OTLP request(s) received, wanted {count}")
            return list(self.received)

    def __iter__(self) -> Iterator[Received]:
        return iter(list(self.received))


# --- the OTLP request seen as /metrics would show it ---------------------------------------------------------------

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def metrics_samples(text: str, prefix: str = "region_latency_") -> dict[SampleKey, float]:
    """Every sample of the /metrics text whose name starts with `prefix`: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name.startswith(prefix)}


def as_prometheus(received: Received, *, histogram: bool = True) -> dict[SampleKey, float]:
    """The request's data points under the Prometheus names and labels the family table gives them (the inverse
    of export/otel.py's mapping): comparable with `metrics_samples` of /metrics for the same snapshot."""
    from region_latency.export.families import TARGET_FAMILIES, HistogramFamily
    from region_latency.export.otel import attribute_key, instrument_name

    by_name = {instrument_name(family): family for family in TARGET_FAMILIES}
    out: dict[SampleKey, float] = {}
    for name, metric in received.metrics().items():
        family = by_name[name]
        labels_of = {attribute_key(label): label for label in family.labels}
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points:
            labels = {labels_of[key]: str(value) for key, value in attributes(point).items()}
            assert set(labels) == set(family.labels), (name, labels)
            if isinstance(family, HistogramFamily):
                if not histogram:
                    continue
                assert kind == "histogram", kind
                assert list(point.explicit_bounds) == list(family.buckets)
                running = 0
                for le, count in zip(family.le_labels, point.bucket_counts, strict=True):
                    running += count
                    out[(f"{family.name}_bucket", frozenset({**labels, "le": le}.items()))] = running
                out[(f"{family.name}_count", frozenset(labels.items()))] = point.count
                out[(f"{family.name}_sum", frozenset(labels.items()))] = point.sum
                continue
            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            out[(family.name, frozenset(labels.items()))] = value
    return out
