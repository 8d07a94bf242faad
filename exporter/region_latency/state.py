"""One configured target's live state: its tracker, plus what operators see beyond the EMA.

Probe results are recorded here (tracker update, histogram, counters, ranking evaluation) under
one lock, and exporters read one immutable `TargetSnapshot` per scrape: a scrape never waits on a
probe and never sees half an update.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from region_latency.metric_options import DEFAULT_BUCKETS, DEFAULT_METRICS, MetricsOptions
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import EMPTY_RANKING, PlainRanking, Ranking, RankingPolicy, RegionState
from region_latency.tracker import RegionLatencyTracker, TrackerSnapshot
from region_latency.trust import NOTHING_CHECKED, TrustCheck
from region_latency.trust import check as check_trust

log = logging.getLogger(__name__)

# Raw-sample histogram buckets (seconds) of a target that does not set its own (`metrics.histogram.buckets`).
SAMPLE_BUCKETS: tuple[float, ...] = DEFAULT_BUCKETS
_NO_VERSIONS: Mapping[str, int] = MappingProxyType({})
REEVALUATE_AFTER = 1.0  # seconds: a clock-driven re-rank is skipped when the ranking is younger than this


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """The identity of a target: the labels every one of its series carries."""

    name: str
    service: str
    probe: str
    measure: str | None = None  # the https probe's `measure` (ttfb, warm, cold); None for the other kinds
    ip_family: str | None = None  # "ipv4" / "ipv6" for one family of a target with ip_families (a label then)

    @property
    def key(self) -> str:
        """Unique among the exporter's targets: the name, plus `@<family>` for one family of a target (the two
        families of a dual-stack target share the name)."""
        return self.name if self.ip_family is None else f"{self.name}@{self.ip_family}"


@dataclass(frozen=True, slots=True)
class LastProbe:
    """The most recent probe of one region."""

    at: float
    success: bool
    phases: Mapping[str, float]
    status: int | None
    error: str | None
    detail: str
    connect_timing: str | None = None  # which clock timed phases["connect"]: "kernel" (tcpi_rtt) or "stamps"


@dataclass(frozen=True, slots=True)
class HistogramData:
    bucket_counts: tuple[int, ...]  # non-cumulative, one per bucket bound of the target plus +Inf
    total: float
    count: int


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    info: TargetInfo
    regions: tuple[str, ...]
    tracker: TrackerSnapshot
    ranking: Ranking
    last_probe: Mapping[str, LastProbe]
    histograms: Mapping[str, HistogramData]
    probes_total: Mapping[str, int]
    failures_total: Mapping[tuple[str, str], int]  # (region, reason) -> count
    generation: int
    trust: TrustCheck = NOTHING_CHECKED  # whether the regions' EMAs can be real (region_latency.trust)
    # region -> why the address family its target asked for (ip_version) cannot be used from here
    family_unavailable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    metrics: MetricsOptions = DEFAULT_METRICS  # which optional series the target publishes
    region_versions: Mapping[str, int] = field(default_factory=lambda: _NO_VERSIONS)  # per region, bumped when
    # its own results change: lets a writer redo only the regions that changed

    @property
    def buckets(self) -> tuple[float, ...]:
        """The raw-sample histogram's bucket bounds of this target (+Inf implied)."""
        return self.metrics.histogram.buckets


@dataclass(slots=True)
class _Histogram:
    """One region's raw-sample counts; its frozen copy is made once per observation, not once per snapshot."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    frozen: HistogramData | None = None

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1
        self.frozen = None

    def freeze(self) -> HistogramData:
        if self.frozen is None:
            self.frozen = HistogramData(tuple(self.counts), self.total, self.count)
        return self.frozen


class TargetState:
    """Records probe results for one target and hands out consistent snapshots."""

    def __init__(
        self,
        info: TargetInfo,
        regions: Sequence[str],
        tracker: RegionLatencyTracker,
        policy: RankingPolicy | None = None,
        clock: Callable[[], float] = time.time,
        metrics: MetricsOptions = DEFAULT_METRICS,
    ) -> None:
        self.info = info
        self.metrics = metrics
        self._region_versions: dict[str, int] = {}
        self.tracker = tracker
        self.policy: RankingPolicy = policy or PlainRanking()
        self._clock = clock
        self._lock = threading.Lock()
        self._regions = tuple(regions)
        self._last_probe: dict[str, LastProbe] = {}
        self._histograms: dict[str, _Histogram] = {}
        self._probes_total: dict[str, int] = {}
        self._failures_total: dict[tuple[str, str], int] = {}
        self._family_unavailable: dict[str, str] = {}
        self._generation = 0
        self._snapshot: TargetSnapshot | None = None
        with self._lock:
            self._evaluate(clock())

    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    def record(self, region: str, result: ProbeResult) -> None:
        """Fold one probe result into the tracker, the counters and the ranking, atomically."""
        if result.error == ErrorKind.FAMILY_UNAVAILABLE:
            self._record_family_unavailable(region, result.detail)
            return
        now = self._clock()
        with self._lock:
            back = self._family_unavailable.pop(region, None) is not None
            self.tracker.record(region, result)
            self._probes_total[region] = self._probes_total.get(region, 0) + 1
            self._region_versions[region] = self._region_versions.get(region, 0) + 1
            if result.latency is not None and self.metrics.histogram.enabled:
                histogram = self._histograms.get(region)
                if histogram is None:
                    histogram = self._histograms[region] = _Histogram(self.metrics.histogram.buckets)
                histogram.observe(result.latency)
            else:
                key = (region, str(result.error or "other"))
                self._failures_total[key] = self._failures_total.get(key, 0) + 1
            self._last_probe[region] = LastProbe(
                at=now,
                success=result.ok,
                phases=MappingProxyType(dict(result.phases)),
                status=result.status,
                error=None if result.error is None else str(result.error),
                detail=result.detail,
                connect_timing=result.connect_timing,
            )
            before = self._ranking
            self._evaluate(now)
            self._generation += 1
            self._snapshot = None
            changes = ranking_changes(self.info, before, self._ranking, self._last_probe)
        if back:
            log.info("address family available again", extra=self._family_fields(region, "answering again"))
        log_changes(changes)

    def _record_family_unavailable(self, region: str, detail: str) -> None:
        """The address family the target asked for cannot be used from here: reported (once, and in snapshots),
        not counted as the region failing. The tracker, failure counters and last probe are left as they were."""
        with self._lock:
            self._probes_total[region] = self._probes_total.get(region, 0) + 1
            self._region_versions[region] = self._region_versions.get(region, 0) + 1  # its lines changed
            first = region not in self._family_unavailable
            self._family_unavailable[region] = detail
            self._generation += 1
            self._snapshot = None
        if first:  # once per change, as every state log line: not a failing region, not one line per probe
            log.warning("address family not available from here", extra=self._family_fields(region, detail))

    def _family_fields(self, region: str, reason: str) -> dict[str, object]:
        return {"target": self.info.name, "region": region, "ip_family": self.info.ip_family or "asked by ip_version",
                "reason": reason}

    def _evaluate(self, now: float) -> None:
        """Under the lock: rank the tracker's current state. The tracker snapshot taken for it is the one the next
        TargetSnapshot shows (the tracker changes only through this class), so it is copied once per change."""
        self._tracker_snapshot = self.tracker.snapshot()
        self._ranking = self.policy.evaluate(self._tracker_snapshot, self._regions, now)
        self._evaluated_at = now

    def reevaluate(self, now: float | None = None) -> None:
        """Re-rank without a new result (clock-driven: staleness); publishes only if the ranking changed.

        Skipped when the ranking was evaluated less than REEVALUATE_AFTER seconds ago (a probe result of this
        target re-ranks it too): with many regions a target gets results several times a second, and
        evaluating it again on every tick would only repeat that work."""
        with self._lock:
            now = self._clock() if now is None else now
            if 0 <= now - self._evaluated_at < REEVALUATE_AFTER:
                return
            ranking = self.policy.evaluate(self._tracker_snapshot, self._regions, now)
            self._evaluated_at = now
            if ranking == self._ranking:
                return
            before, self._ranking = self._ranking, ranking
            self._generation += 1
            self._snapshot = None
            changes = ranking_changes(self.info, before, ranking, self._last_probe)
        log_changes(changes)

    def set_regions(self, regions: Sequence[str], policy: RankingPolicy | None = None) -> None:
        """Change the probed regions (a reload): state of kept regions survives, dropped ones go."""
        with self._lock:
            dropped = set(self._regions) - set(regions)
            for region in dropped:
                self.tracker.forget(region)
                self._last_probe.pop(region, None)
                self._histograms.pop(region, None)
                self._probes_total.pop(region, None)
                self._family_unavailable.pop(region, None)
                for key in [k for k in self._failures_total if k[0] == region]:
                    del self._failures_total[key]
            self._regions = tuple(regions)
            if policy is not None:
                self.policy = policy
            self._evaluate(self._clock())
            self._generation += 1
            self._snapshot = None

    def set_metrics(self, metrics: MetricsOptions) -> None:
        """Change which optional series the target publishes (a reload). New histogram buckets start the
        histograms afresh: counts kept under other bounds would be wrong under the new ones."""
        with self._lock:
            if metrics == self.metrics:
                return
            if metrics.histogram != self.metrics.histogram:
                self._histograms.clear()
            self.metrics = metrics
            for region in self._regions:
                self._region_versions[region] = self._region_versions.get(region, 0) + 1
            self._generation += 1
            self._snapshot = None

    def snapshot(self) -> TargetSnapshot:
        """The current state; the same object is returned until the next update."""
        with self._lock:
            if self._snapshot is None:
                tracker = self._tracker_snapshot
                self._snapshot = TargetSnapshot(
                    info=self.info,
                    regions=self._regions,
                    tracker=tracker,
                    ranking=self._ranking if self._regions else EMPTY_RANKING,
                    last_probe=MappingProxyType(dict(self._last_probe)),
                    histograms=MappingProxyType({r: h.freeze() for r, h in self._histograms.items()}),
                    probes_total=MappingProxyType(dict(self._probes_total)),
                    failures_total=MappingProxyType(dict(self._failures_total)),
                    generation=self._generation,
                    trust=trust_of(tracker, self._regions),
                    family_unavailable=MappingProxyType(dict(self._family_unavailable)),
                    metrics=self.metrics,
                    region_versions=MappingProxyType(dict(self._region_versions)),
                )
            return self._snapshot


def trust_of(tracker: TrackerSnapshot, regions: Sequence[str]) -> TrustCheck:
    """The physics check (region_latency.trust) of the EMAs of `regions`, in their order."""
    emas = {region: stats.ema for region in regions
            if (stats := tracker.regions.get(region)) is not None and stats.ema is not None}
    return check_trust(emas)


# --- what an operator reads at 3 a.m.: one line per change of a region's state, never one per probe ---------------

_Change = tuple[int, str, dict[str, object]]  # (log level, message, extra fields)


def ranking_changes(info: TargetInfo, before: Ranking, after: Ranking,
                    last_probe: Mapping[str, LastProbe]) -> list[_Change]:
    """The log lines for what changed from `before` to `after`: a region failing, recovering or going stale, and
    the #1 taken or lost. Computed under the state's lock, logged after it (log_changes)."""
    out: list[_Change] = []
    old = {entry.region: entry for entry in before.entries}
    for entry in after.entries:
        was = old.get(entry.region)
        previous = was.state if was is not None else None
        if previous is None or previous is entry.state:
            continue
        fields: dict[str, object] = {"target": info.name, "region": entry.region, "state": entry.state.value,
                                     "previous": previous.value}
        if entry.state is RegionState.FAILING:
            fields["reason"] = _failure_reason(last_probe.get(entry.region))
            out.append((logging.WARNING, "region failing", fields))
        elif entry.state is RegionState.STALE:
            fields["reason"] = "no latency sample within the staleness limit (ttl)"
            out.append((logging.WARNING, "region stale", fields))
        elif entry.state is RegionState.HEALTHY and previous in (RegionState.FAILING, RegionState.STALE):
            fields["reason"] = f"answering again after being {previous.value}"
            out.append((logging.INFO, "region recovered", fields))
    if before.fastest != after.fastest:
        fields = {"target": info.name, "region": after.fastest or "none", "previous": before.fastest or "none"}
        new = next((e for e in after.entries if e.region == after.fastest), None)
        lost = next((e for e in after.entries if e.region == before.fastest), None)
        if after.fastest is None:
            fields["reason"] = "no region is ranked"
        elif lost is None or before.fastest is None:
            fields["reason"] = "first ranked region" if before.fastest is None else "previous #1 no longer probed"
        elif lost.rank is None:
            fields["reason"] = f"previous #1 is {lost.state.value}"
        elif (last := last_probe.get(lost.region)) is not None and not last.success:
            fields["reason"] = f"previous #1 failed a probe ({_failure_reason(last)})"
        else:
            fields["reason"] = "faster by the switch margin"
        if new is not None and new.ema is not None:
            fields["ema_seconds"] = round(new.ema, 6)
        out.append((logging.INFO, "fastest region changed", fields))
    return out


def _failure_reason(last: LastProbe | None) -> str:
    if last is None or last.success:
        return "failing"
    return f"{last.error or 'error'}: {last.detail}" if last.detail else str(last.error or "error")


def log_changes(changes: Sequence[_Change]) -> None:
    for level, message, fields in changes:
        log.log(level, message, extra=fields)
