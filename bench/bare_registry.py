"""The baseline of the scrape benchmark: a plain prometheus_client registry holding the exporter's series.

`python -m bench.bare_registry EXPOSITION_FILE PORT` reads a text exposition the exporter served, recreates every
`region_latency_*` series with prometheus_client's own Gauge/Counter/Histogram/Info (the way a hand-written
exporter would hold them), adds the same process/platform/GC collectors the exporter registers, and serves it with
`start_http_server`, prometheus_client's own server (a wsgiref server with a thread per connection, rendering on
every scrape): what an exporter written the usual way with prometheus_client serves.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

NATIVE_PREFIXES = ("process_", "python_")  # produced by the collectors below, not copied


def build(text: str) -> tuple[CollectorRegistry, int]:
    """A registry with every region_latency_* series of TEXT; returns it and the number of series copied."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # the exporter emits no _created series either
    registry = CollectorRegistry(auto_describe=False)
    copied = 0
    for family in text_string_to_metric_families(text):
        if family.name.startswith(NATIVE_PREFIXES) or not family.samples:
            continue
        copied += _copy(registry, family)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry, copied


def _copy(registry: CollectorRegistry, family: Any) -> int:
    name, doc, kind, samples = family.name, family.documentation, family.type, family.samples
    if kind == "gauge" and name.endswith("_info") and len(samples) == 1 and samples[0].value == 1:
        Info(name.removesuffix("_info"), doc, registry=registry).info(dict(samples[0].labels))
        return 1
    if kind == "histogram":
        return _copy_histogram(registry, name, doc, samples)
    labelnames = list(samples[0].labels)
    if kind == "counter":
        metric: Gauge | Counter = Counter(name, doc, labelnames, registry=registry)
    else:
        metric = Gauge(name, doc, labelnames, registry=registry)
    for sample in samples:
        child = metric.labels(**sample.labels) if labelnames else metric
        if isinstance(child, Counter):
            child.inc(sample.value)
        else:
            child.set(sample.value)
    return len(samples)


def _copy_histogram(registry: CollectorRegistry, name: str, doc: str, samples: Sequence[Any]) -> int:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    bounds: set[float] = set()
    for s in samples:
        labels = dict(s.labels)
        le = labels.pop("le", None)
        entry = series.setdefault(tuple(labels.items()), {"buckets": [], "sum": 0.0})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(le), s.value))
            bounds.add(float(le))
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
    labelnames = [k for k, _ in next(iter(series))] if series else []
    histogram = Histogram(name, doc, labelnames, buckets=sorted(bounds), registry=registry)
    for key, entry in series.items():
        child = histogram.labels(**dict(key))
        previous = 0.0
        for i, (_, cumulative) in enumerate(sorted(entry["buckets"])):
            child._buckets[i].inc(cumulative - previous)  # prometheus_client has no setter for a bucket
            previous = cumulative
        child._sum.set(entry["sum"])
    return len(samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = Path(args[0]).read_text()
    registry, copied = build(text)
    start_http_server(int(args[1]), addr="127.0.0.1", registry=registry)
    print(f"serving {copied} copied samples on 127.0.0.1:{args[1]}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
