"""OpenTelemetry for applications that embed a `RegionLatencyTracker`: the exporter's instruments in one call.

    from opentelemetry.sdk.metrics import MeterProvider
    from region_latency.otel import instrument_tracker

    instruments = instrument_tracker(tracker, meter_provider, service="bedrock-runtime")

The application's own MeterProvider (with its own readers and exporters) then reports `region_latency.ema`,
`region_latency.samples`, `region_latency.rank`, ... for the tracker's regions, with the same names, units and
attributes as the exporter's OTLP push (docs/METRICS.md, "OpenTelemetry"). The values are read from one tracker
snapshot per collection; the ranking is the plan's plain sort (or the policy given). Families that only a
probing exporter fills (probe success, phases, HTTP status, probe counts, the raw-sample histogram) are left
out: a tracker fed by the application has none of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.metrics import MeterProvider

from region_latency.export.families import TARGET_FAMILIES, AnyFamily, HistogramFamily
from region_latency.export.otel import SCOPE_NAME, SnapshotInstruments
from region_latency.ranking import PlainRanking, RankingPolicy
from region_latency.state import TargetInfo, TargetSnapshot
from region_latency.tracker import LatencyTracker

# Families read from probe bookkeeping that a tracker alone does not keep (they would show zeros or nothing).
_PROBE_ONLY = frozenset({
    "region_latency_probe_success", "region_latency_probe_duration_seconds", "region_latency_probe_http_status_code",
    "region_latency_last_probe_timestamp_seconds", "region_latency_probes_total", "region_latency_probe_failures_total",
})
TRACKER_FAMILIES: tuple[AnyFamily[TargetSnapshot], ...] = tuple(
    family for family in TARGET_FAMILIES if family.name not in _PROBE_ONLY and not isinstance(family, HistogramFamily))


def tracker_snapshots(tracker: LatencyTracker, info: TargetInfo, *, regions: Sequence[str] | None = None,
                      policy: RankingPolicy | None = None,
                      clock: Callable[[], float] = time.time) -> Callable[[], list[TargetSnapshot]]:
    """A function giving the tracker's state as a one-element list of `TargetSnapshot` (what the instruments
    read): its regions (or `regions`, in that order), ranked by `policy` (default: the plan's plain sort)."""
    rank = policy or PlainRanking()
    empty: MappingProxyType[Any, Any] = MappingProxyType({})

    def snapshots() -> list[TargetSnapshot]:
        snap = tracker.snapshot()
        names = tuple(regions) if regions is not None else tuple(snap.regions)
        return [TargetSnapshot(info=info, regions=names, tracker=snap, ranking=rank.evaluate(snap, names, clock()),
                               last_probe=empty, histograms=empty, probes_total=empty, failures_total=empty,
                               generation=0)]

    return snapshots


def instrument_tracker(tracker: LatencyTracker, meter_provider: MeterProvider, *, target: str = "app",
                       service: str = "unknown", probe: str = "passive", regions: Sequence[str] | None = None,
                       policy: RankingPolicy | None = None) -> SnapshotInstruments:
    """Register the tracker's instruments on `meter_provider` (its `region_latency` meter); returns them, with
    `detach()` to stop reporting. `target`, `service` and `probe` become the `region_latency.target`,
    `rpc.service` and `region_latency.probe` attributes."""
    info = TargetInfo(name=target, service=service, probe=probe)
    meter = meter_provider.get_meter(SCOPE_NAME)
    return SnapshotInstruments(meter, tracker_snapshots(tracker, info, regions=regions, policy=policy),
                               TRACKER_FAMILIES)


__all__ = ["TRACKER_FAMILIES", "instrument_tracker", "tracker_snapshots"]
