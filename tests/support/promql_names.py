"""Which metric names a PromQL expression reads, and which names exist: docs/METRICS.md's families, the
project's recording rules, prometheus_client's process families and Prometheus' own series."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}
PROMETHEUS_SERIES = {"up", "scrape_samples_scraped", "scrape_duration_seconds", "ALERTS"}


def metric_names(expr: str) -> set[str]:
    """Metric names in `expr` (not functions, keywords, label names, durations or numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][\w:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isalnum() or before in "._$":
            continue  # part of a number (1e4), or a template variable
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def documented_families() -> set[str]:
    """The `region_latency_*` names of docs/METRICS.md's family table, with a histogram's sample suffixes."""
    families = set(re.findall(r"^\| `(region_latency_\w+)`", (REPO / "docs" / "METRICS.md").read_text(), re.M))
    histograms = {name for name in families if name == "region_latency_sample_seconds"}
    return families | {f"{name}_{suffix}" for name in histograms for suffix in ("bucket", "count", "sum")}


def process_series() -> set[str]:
    """prometheus_client's process_* sample names, as the exporter publishes them."""
    collector = ProcessCollector(registry=CollectorRegistry())
    return {sample.name for family in collector.collect() for sample in family.samples}


def known_names(recording: set[str]) -> set[str]:
    return documented_families() | process_series() | PROMETHEUS_SERIES | recording
