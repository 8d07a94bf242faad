"""The OpenTelemetry view: the family table (export/families.py) as OTel instruments, and the OTLP push.

Every instrument is derived from the table, none is written by hand: a gauge family becomes an observable gauge,
a counter an observable monotonic counter, both reading the same immutable snapshots /metrics reads (one set
of snapshots per collection, taken by the first callback, so one export never mixes two generations); the
histogram of raw samples becomes a synchronous histogram fed by a result listener (`SampleHistogram`), which
the exporter calls next to `TargetState.record`. Names, units and attributes follow OpenTelemetry's style:

- name: `region_latency.` + the family's name without the namespace, `_total` and `_seconds`
  (`region_latency_ema_seconds` -> `region_latency.ema`, `region_latency_probes_total` -> `region_latency.probes`);
  the OTel -> Prometheus conversion (unit suffix, `_total` for monotonic sums) gives the Prometheus name back.
- unit: the family's UCUM unit (`s`, `1`, `{probe}`), description: its HELP text.
- attributes: each Prometheus label under a semantic-convention key where one fits (`region` -> `cloud.region`,
  `service` -> `rpc.service`, `reason` -> `error.type`), else `region_latency.<label>` (see ATTRIBUTE_KEYS).

`OtlpExporter` is the exporter process's push: a MeterProvider of its own (never the global one, never a reader
on the Prometheus registry, so /metrics does not change), a periodic reader and the SDK's OTLP exporter behind a
wrapper that counts exports and failures, logs once per change of state (the SDK's per-export error logs are
caught and only their last message kept, as the reason), and publishes the counts on /metrics through
`OtlpStatusCollector`. Nothing is queued while the endpoint is down: each export carries the current state,
a failed one is dropped, so memory stays flat; each export is bounded by the configured timeout.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as sdk_version
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from region_latency._version import __version__
from region_latency.export.families import (
    NAMESPACE,
    TARGET_FAMILIES,
    AnyFamily,
    Family,
    HistogramFamily,
    Kind,
    target_identity,
)
from region_latency.otlp_config import GRPC_MODULE, OtlpConfig
from region_latency.probes.base import ProbeResult
from region_latency.state import TargetInfo, TargetSnapshot

log = logging.getLogger(__name__)

SCOPE_NAME = "region_latency"  # the instrumentation scope (meter name) of every instrument

# Prometheus label -> OTel attribute key. A label not listed here becomes `region_latency.<label>`.
ATTRIBUTE_KEYS: Mapping[str, str] = {
    "target": "region_latency.target",
    "service": "rpc.service",
    "probe": "region_latency.probe",
    "region": "cloud.region",
    "phase": "region_latency.phase",
    "reason": "error.type",
    "state": "region_latency.state",
    "rank": "region_latency.rank",
}

Snapshots = Callable[[], Sequence[TargetSnapshot]]
ResultListener = Callable[[TargetInfo, str, ProbeResult], None]


def attribute_key(label: str) -> str:
    return ATTRIBUTE_KEYS.get(label, f"{NAMESPACE}.{label}")


def instrument_name(family: AnyFamily[Any]) -> str:
    """`region_latency_probe_duration_seconds` -> `region_latency.probe_duration` (see the module doc)."""
    stem = family.name.removeprefix(f"{NAMESPACE}_").removesuffix("_total")
    if family.unit == "s":
        stem = stem.removesuffix("_seconds")
    return f"{NAMESPACE}.{stem}"


def _attributes(family: AnyFamily[Any], ident: tuple[str, ...], region: str | None,
                extra: tuple[str, ...]) -> dict[str, str]:
    values = (*ident, *extra) if region is None else (*ident, region, *extra)
    return {attribute_key(label): value for label, value in zip(family.labels, values, strict=True)}


class SnapshotInstruments:
    """Observable instruments for every gauge and counter family of a table, reading `snapshots()`.

    The first instrument's callback takes the snapshots for the whole collection (the SDK calls callbacks in
    registration order, one collection at a time), so all instruments of one export show one generation.
    """

    def __init__(self, meter: Meter, snapshots: Snapshots,
                 table: Sequence[AnyFamily[TargetSnapshot]] = TARGET_FAMILIES) -> None:
        self._snapshots = snapshots
        self._current: Sequence[TargetSnapshot] = ()
        self._attached = True
        scalar = [family for family in table if isinstance(family, Family)]
        for position, family in enumerate(scalar):
            callback = self._callback(family, refresh=position == 0)
            create = meter.create_observable_counter if family.kind is Kind.COUNTER else meter.create_observable_gauge
            create(instrument_name(family), callbacks=[callback], unit=family.unit, description=family.help)

    def _callback(self, family: Family[TargetSnapshot], *, refresh: bool) -> Callable[
            [CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            if not self._attached:
                return []
            if refresh:
                self._current = tuple(self._snapshots())
            return list(self._observe(family, self._current))

        return observe

    @staticmethod
    def _observe(family: Family[TargetSnapshot], snapshots: Sequence[TargetSnapshot]) -> Iterator[Observation]:
        for snap in snapshots:
            ident = target_identity(snap)
            for region, extra, value in family.read(snap):
                yield Observation(value, _attributes(family, ident, region, extra))

    def detach(self) -> None:
        """Report nothing from now on (OpenTelemetry instruments cannot be removed from a meter)."""
        self._attached = False
        self._current = ()


class SampleHistogram:
    """The raw-sample histogram family as a synchronous OTel histogram; call it with every probe result.

    A `ResultListener`: `listener(info, region, result)` right after `TargetState.record(region, result)`
    records the latency of a successful probe, with the same bucket bounds as /metrics (advisory: a View may
    choose the exponential histogram instead).
    """

    def __init__(self, meter: Meter, family: HistogramFamily[TargetSnapshot] | None = None) -> None:
        self.family = family or next(f for f in TARGET_FAMILIES if isinstance(f, HistogramFamily))
        self.name = instrument_name(self.family)
        self._histogram = meter.create_histogram(self.name, unit=self.family.unit, description=self.family.help,
                                                 explicit_bucket_boundaries_advisory=list(self.family.buckets))
        self._attributes: dict[tuple[TargetInfo, str], dict[str, str]] = {}

    def __call__(self, info: TargetInfo, region: str, result: ProbeResult) -> None:
        if result.latency is None:
            return
        key = (info, region)
        attributes = self._attributes.get(key)
        if attributes is None:
            ident = (info.name, info.service, info.probe)
            attributes = self._attributes[key] = _attributes(self.family, ident, region, ())
        self._histogram.record(result.latency, attributes)


@dataclass(frozen=True)
class Instruments:
    """What `attach` registered on a meter: detach the observable ones; feed the histogram with results."""

    observable: SnapshotInstruments
    samples: SampleHistogram

    def detach(self) -> None:
        self.observable.detach()


def attach(meter_provider: MeterProvider, snapshots: Snapshots,
           table: Sequence[AnyFamily[TargetSnapshot]] = TARGET_FAMILIES) -> Instruments:
    """Every family of `table` as instruments of `meter_provider`'s `region_latency` meter."""
    meter = meter_provider.get_meter(SCOPE_NAME, __version__)
    histogram = next((f for f in table if isinstance(f, HistogramFamily)), None)
    return Instruments(SnapshotInstruments(meter, snapshots, table), SampleHistogram(meter, histogram))


# --- the exporter process's push ---------------------------------------------------------------------------------

# Loggers the SDK reports each failed export on (one to three lines per interval while the endpoint is down).
SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.sdk.metrics._internal.export",
)


class _SdkLogCapture(logging.Filter):
    """Drops the SDK's per-export log records, keeping the first warning of an export as the reason it failed
    (with retries, the first names the error: "Transient error ... Connection refused ...", the last only says
    that it gave up)."""

    def __init__(self) -> None:
        super().__init__()
        self.first: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and self.first is None:
            self.first = record.getMessage()
        return False

    def take(self) -> str | None:
        first, self.first = self.first, None
        return first


@dataclass
class ExportStatus:
    """What the push has done so far (read by /metrics and tests; written by the reader thread only)."""

    exports: int = 0
    failures: int = 0
    last_success_at: float | None = None
    last_duration: float | None = None
    failing: bool = False
    last_error: str | None = None


class _CountingExporter(MetricExporter):
    """The SDK's OTLP exporter, counted: every export and failure, and one log line per change of state."""

    def __init__(self, inner: MetricExporter, url: str, interval: float, capture: _SdkLogCapture,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self._url = url
        self._interval = interval
        self._capture = capture
        self._clock = clock
        self.status = ExportStatus()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        started = time.monotonic()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            error = self._capture.take()
        except Exception as exc:  # an exporter bug must not end the reader thread's loop
            self._capture.take()
            result, error = MetricExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        status = self.status
        status.exports += 1
        status.last_duration = time.monotonic() - started
        if result is MetricExportResult.SUCCESS:
            if status.failing:
                log.info("OTLP export to %s recovered after %d failed export(s)", self._url, status.failures)
            elif status.last_success_at is None:
                log.info("OTLP export to %s: first export succeeded", self._url)
            status.failing, status.last_error = False, None
            status.last_success_at = self._clock()
        else:
            status.failures += 1
            status.last_error = error or "export failed (no reason given)"
            if not status.failing:
                log.warning("OTLP export to %s failing: %s; retrying every %gs (counted in "
                            "region_latency_otlp_export_failures_total, logged again when it recovers)",
                            self._url, status.last_error, self._interval)
            status.failing = True
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def otlp_metric_exporter(config: OtlpConfig) -> MetricExporter:
    """The SDK's OTLP exporter for `config`: every setting passed explicitly (the SDK reads only what is not
    given from os.environ: TLS files, temporality preference)."""
    if config.protocol == "grpc":  # the `grpc` extra, imported by name: it is optional
        grpc = importlib.import_module("grpc")
        exporter: MetricExporter = importlib.import_module(GRPC_MODULE).OTLPMetricExporter(
            endpoint=config.url, headers=config.header_values(), timeout=config.timeout,
            compression=grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression)
        return exporter
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=config.url, headers=config.header_values(), timeout=config.timeout,
                              compression=Compression.Gzip if config.compression == "gzip"
                              else Compression.NoCompression)


def resource(config: OtlpConfig) -> Resource:
    """The configured resource, built without the SDK's environment detectors: the OTEL_* variables were read
    with the configuration (region_latency.otlp_config), from the environment it was given."""
    return Resource({"telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
                     "telemetry.sdk.version": sdk_version, **config.resource(__version__)})


class OtlpExporter:
    """The push of one exporter process: start() after the states exist, stop() at shutdown.

    `on_result` is the `ResultListener` the exporter calls after each `TargetState.record`. `exporter` replaces
    the SDK's OTLP exporter (tests).
    """

    def __init__(self, config: OtlpConfig, snapshots: Snapshots, *, exporter: MetricExporter | None = None) -> None:
        self.config = config
        self._snapshots = snapshots
        self._exporter = exporter
        self._capture = _SdkLogCapture()
        self._provider: SdkMeterProvider | None = None
        self._samples: SampleHistogram | None = None
        self._counting: _CountingExporter | None = None
        self._lock = threading.Lock()

    @property
    def status(self) -> ExportStatus:
        return self._counting.status if self._counting is not None else ExportStatus()

    def start(self) -> None:
        with self._lock:
            if self._provider is not None:
                return
            for name in SDK_LOGGERS:
                logging.getLogger(name).addFilter(self._capture)
            inner = self._exporter or otlp_metric_exporter(self.config)
            self._counting = _CountingExporter(inner, self.config.url, self.config.interval, self._capture)
            reader = PeriodicExportingMetricReader(self._counting, export_interval_millis=self.config.interval * 1000,
                                                   export_timeout_millis=self.config.timeout * 1000)
            histogram = next(f for f in TARGET_FAMILIES if isinstance(f, HistogramFamily))
            exponential = View(instrument_name=instrument_name(histogram),
                               aggregation=ExponentialBucketHistogramAggregation())
            views = [exponential] if self.config.histogram == "exponential" else []
            provider = SdkMeterProvider(metric_readers=[reader], resource=resource(self.config), views=views,
                                        shutdown_on_exit=False)
            instruments = attach(provider, self._snapshots)
            self._samples = instruments.samples
            self._provider = provider
        log.info("pushing metrics over OTLP (%s) to %s every %gs", self.config.protocol, self.config.url,
                 self.config.interval)

    def on_result(self, info: TargetInfo, region: str, result: ProbeResult) -> None:
        samples = self._samples
        if samples is not None:
            samples(info, region, result)

    def collect_now(self, timeout: float | None = None) -> bool:
        """Collect and export at once (tests): whether that export succeeded."""
        provider, counting = self._provider, self._counting
        if provider is None or counting is None:
            return False
        failures = counting.status.failures
        provider.force_flush(timeout_millis=(timeout or self.config.timeout) * 1000)
        return counting.status.failures == failures and counting.status.last_success_at is not None

    def stop(self, timeout: float | None = None) -> None:
        """A last export (bounded by `timeout`, default the export timeout up to 5 s), then stop the thread."""
        with self._lock:
            provider, self._provider, self._samples = self._provider, None, None
        if provider is None:
            return
        provider.shutdown(timeout_millis=(timeout if timeout is not None else min(self.config.timeout, 5.0)) * 1000)
        for name in SDK_LOGGERS:
            logging.getLogger(name).removeFilter(self._capture)


class OtlpStatusCollector(Collector):
    """The push's own families on /metrics (registered beside build info, on the runtime registry).

    Exporter-level, so no target labels: region_latency_otlp_exports_total, ..._export_failures_total,
    ..._last_success_timestamp_seconds, ..._export_duration_seconds (of the latest export).
    """

    def __init__(self, exporter: OtlpExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        status = self._exporter.status
        yield CounterMetricFamily(f"{NAMESPACE}_otlp_exports", "OTLP exports attempted (one per interval).",
                                  value=status.exports)
        yield CounterMetricFamily(f"{NAMESPACE}_otlp_export_failures",
                                  "OTLP exports that failed (endpoint down, slow, refusing or rejecting).",
                                  value=status.failures)
        if status.last_success_at is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_otlp_last_success_timestamp_seconds",
                                    "When an OTLP export last succeeded (Unix time).", value=status.last_success_at)
        if status.last_duration is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_otlp_export_duration_seconds",
                                    "How long the latest OTLP export took, retries included.",
                                    value=status.last_duration)


__all__ = [
    "ATTRIBUTE_KEYS",
    "SCOPE_NAME",
    "ExportStatus",
    "Instruments",
    "OtlpExporter",
    "OtlpStatusCollector",
    "ResultListener",
    "SampleHistogram",
    "SnapshotInstruments",
    "attach",
    "attribute_key",
    "instrument_name",
    "resource",
]
