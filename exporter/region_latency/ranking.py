"""Ranking policy on top of the tracker's EMA: which regions are ranked, and in what order.

`PlainRanking` is the design plan's sort exactly (ascending EMA, unmeasured last). It trusts a
region's average forever, even when the region stopped answering. `TrustedRanking` (the default)
ranks only regions that answer, were measured recently and often enough, and keeps the published
#1 steady against noise; see docs/RANKING.md. Neither changes the EMA: a policy changes only the
ranking. Policies are evaluated when probe results arrive and on the scheduler's clock tick, never
on a scrape, so what a scrape shows does not depend on how often it is scraped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from region_latency.durations import parse_duration
from region_latency.tracker import RegionStats, TrackerSnapshot


class RegionState(StrEnum):
    """What a ranking thinks of a region: exported as the `state` label of region_latency_region_state."""

    HEALTHY = "healthy"  # measured, answering, fresh: ranked
    FAILING = "failing"  # its latest probes failed (ejected until it answers again and its back-off ends)
    STALE = "stale"  # no sample for too long
    UNMEASURED = "unmeasured"  # no sample yet (or fewer than a policy's minimum)


@dataclass(frozen=True, slots=True)
class RankedRegion:
    region: str
    rank: int | None  # 1 = fastest; None = not ranked
    state: RegionState
    ema: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class Ranking:
    """A published order: ranked regions first (rank 1, 2, ...), then unranked ones."""

    entries: tuple[RankedRegion, ...]

    def order(self) -> list[str]:
        """Every region, the ranked ones fastest first: what an application should try, in order."""
        return [entry.region for entry in self.entries]

    def ranked(self) -> list[RankedRegion]:
        return [entry for entry in self.entries if entry.rank is not None]

    @property
    def fastest(self) -> str | None:
        ranked = self.ranked()
        return ranked[0].region if ranked else None

    @property
    def margin(self) -> float | None:
        """EMA of #2 minus EMA of #1 (seconds): how clearly #1 leads; None with fewer than two ranked.

        Negative while a sticky #1 (hysteresis) is trailing a challenger by less than the switch margin.
        """
        ranked = self.ranked()
        if len(ranked) < 2 or ranked[0].ema is None or ranked[1].ema is None:
            return None
        return ranked[1].ema - ranked[0].ema


EMPTY_RANKING = Ranking(entries=())


class RankingPolicy(Protocol):
    def evaluate(self, snapshot: TrackerSnapshot, regions: Sequence[str], now: float) -> Ranking:
        """The ranking of `regions` given the tracker's state at `now` (epoch seconds)."""
        ...


class PlainRanking:
    """The plan's `get_sorted_regions`: every measured region ranked by EMA, failures ignored."""

    def evaluate(self, snapshot: TrackerSnapshot, regions: Sequence[str], now: float) -> Ranking:
        order = snapshot.sorted_regions(regions)
        entries = []
        rank = 0
        for region in order:
            stats = snapshot.regions.get(region)
            if stats is None or stats.ema is None:
                entries.append(RankedRegion(region, None, RegionState.UNMEASURED, None, 0))
                continue
            rank += 1
            state = RegionState.FAILING if stats.consecutive_failures else RegionState.HEALTHY
            entries.append(RankedRegion(region, rank, state, stats.ema, stats.samples))
        return Ranking(entries=tuple(entries))


# -- the trusted policy ---------------------------------------------------------------------------------------------

DEFAULT_MAX_FAILURES = 2
DEFAULT_MIN_SAMPLES = 3
DEFAULT_MARGIN_RELATIVE = 0.05
DEFAULT_MARGIN_ABSOLUTE = 0.004
DEFAULT_SWITCH_AFTER = 1  # measured on traces: the margin does the work; K > 1 mostly adds delay
DEFAULT_TTL_INTERVALS = 3.0  # ttl defaults to this many probe intervals
DEFAULT_BASE_EJECTION_INTERVALS = 1.0
DEFAULT_MAX_EJECTION_INTERVALS = 10.0

# Unranked regions follow the ranked ones in this order: the last known good first, what is known broken last.
UNRANKED_ORDER: tuple[RegionState, ...] = (RegionState.STALE, RegionState.UNMEASURED, RegionState.FAILING)


@dataclass(slots=True)
class _Ejection:
    """Outlier-detection memory of one region: Envoy-style ejection with a growing back-off."""

    count: int = 0  # ejections so far, minus one per max_ejection of health since the latest return
    ejected_at: float | None = None  # None: not ejected
    returned_at: float | None = None


@dataclass(slots=True)
class _Leader:
    """Hysteresis memory: the published #1 and for how many evaluations a challenger has led it by the margins."""

    region: str | None = None
    streak: int = 0  # consecutive evaluations with new information in which a challenger led by the margin
    seen: tuple[object, ...] = ()  # (leader, challenger, their sample+failure counts) at the last evaluation


class TrustedRanking:
    """A ranking that does not lie about dead, silent or barely measured regions, and does not flap.

    - A region is ranked (HEALTHY) when it has at least `min_samples` samples (cached ones count), its
      latest sample is at most `ttl` old, and it is not ejected.
    - `max_failures` consecutive failed probes eject it (FAILING). It is still probed; it returns once it
      has answered without a single failure for its back-off, `base_ejection` * (times ejected) capped
      at `max_ejection`, so a flapping region stays out. The count drops by one per `max_ejection` of
      health after a return.
    - The published #1 must have answered its latest probe when any ranked region did: a failure hands
      #1 over at once, before ejection (`leader_yields_on_failure`). Otherwise #1 is sticky: a challenger
      takes it only after leading by `margin_relative` * the leader's EMA and by `margin_absolute` for
      `switch_after` consecutive evaluations with new information (a new result of the leader or the
      challenger; clock ticks do not count). Ranks 2..n follow the EMA.

    Stateful: one instance per target, evaluated in time order (TargetState serialises the calls).
    """

    def __init__(self, interval: float, settings: RankingSettings | None = None, **fields: Any) -> None:
        """`settings` is the configuration's `ranking:` section; keyword `fields` set (or override) single
        settings, as in `TrustedRanking(30.0, switch_after=2)`. ValueError for settings that do not fit."""
        if fields:
            base = settings.model_dump(exclude_unset=True) if settings is not None else {}
            settings = RankingSettings.model_validate({**base, **fields})
        self.settings = settings if settings is not None else RankingSettings.model_validate({})
        self.interval = interval
        self.limits = self.settings.limits(interval)
        self._ejections: dict[str, _Ejection] = {}
        self._entries: dict[str, RankedRegion] = {}  # each region's latest entry (reused while it is unchanged)
        self._memo: _Memo | None = None  # the latest evaluation, answered again to a tick that cannot change it
        self._returns_at = math.inf  # during an evaluation: the earliest end of an ejection's back-off
        self._leader = _Leader()
        self._lock = threading.Lock()

    def backoff(self, region: str) -> float:
        """Seconds the region must answer without a failure to end its current ejection; 0.0 when not ejected."""
        with self._lock:
            ejection = self._ejections.get(region)
            if ejection is None or ejection.ejected_at is None:
                return 0.0
            return self._backoff(ejection.count)

    def _backoff(self, count: int) -> float:
        return min(self.limits.base_ejection * count, self.limits.max_ejection)

    def evaluate(self, snapshot: TrackerSnapshot, regions: Sequence[str], now: float) -> Ranking:
        with self._lock:
            memo = self._memo
            if (memo is not None and memo.snapshot is snapshot and memo.regions == regions
                    and memo.evaluated_at <= now <= memo.quiet_until):
                return memo.ranking  # no new result, and no region's time runs out before quiet_until
            return self._evaluate(snapshot, regions, now)

    def _evaluate(self, snapshot: TrackerSnapshot, regions: Sequence[str], now: float) -> Ranking:
        """Under the lock: the ranking, and until when a clock tick cannot change it (`_memo`)."""
        self._forget_others(regions)
        self._returns_at = math.inf
        # One pass: each region's state, grouped as (EMA or inf, position, region, stats) rows, which sort by
        # EMA then configured order (the positions differ, so the comparison never reaches the rest).
        groups: dict[RegionState, list[tuple[float, int, str, RegionStats | None]]] = {s: [] for s in RegionState}
        healthy_rows = groups[RegionState.HEALTHY]
        stats_of, ejections = snapshot.regions, self._ejections
        max_failures, min_samples, ttl = self.settings.max_failures, self.settings.min_samples, self.limits.ttl
        for i, region in enumerate(regions):
            stats = stats_of.get(region)
            if stats is None:
                groups[RegionState.UNMEASURED].append((math.inf, i, region, None))
                continue
            ema = stats.ema
            if (ema is not None and region not in ejections and stats.consecutive_failures < max_failures
                    and stats.samples >= min_samples and stats.last_sample_at is not None
                    and now - stats.last_sample_at <= ttl):  # _state's healthy case, without the calls
                healthy_rows.append((ema, i, region, stats))
            else:
                groups[self._state(region, stats, now)].append((math.inf if ema is None else ema, i, region, stats))
        healthy = sorted(groups[RegionState.HEALTHY])
        # A healthy region goes stale once its latest sample is older than ttl; an ejected one returns once its
        # back-off has passed (_ejected): nothing else in a ranking moves with the clock alone. A margin of a
        # millisecond keeps the float arithmetic of those tests on the safe side.
        stale_at = min((row[3].last_sample_at for row in healthy if row[3] is not None
                        and row[3].last_sample_at is not None), default=math.inf) + ttl
        quiet_until = min(stale_at, self._returns_at) - _CLOCK_MARGIN
        names = [row[2] for row in healthy]
        leader = self._pick_leader(names, snapshot)
        if leader is None:
            healthy = []
        elif leader != names[0]:  # a sticky #1: first, the rest by EMA
            healthy.insert(0, healthy.pop(names.index(leader)))
        # An entry equal to the region's previous one is that very object: most are, after one result, and a
        # reader that keeps work per entry (export/text.py) sees at once which ones moved.
        prev = self._entries
        entries: list[RankedRegion] = []
        for rank, (ema, _, region, stats) in enumerate(healthy, 1):
            samples = stats.samples if stats is not None else 0
            old = prev.get(region)
            if (old is None or old.rank != rank or old.ema != ema or old.samples != samples
                    or old.state is not RegionState.HEALTHY):
                old = prev[region] = RankedRegion(region, rank, RegionState.HEALTHY, ema, samples)
            entries.append(old)
        for state in UNRANKED_ORDER:
            for _, _, region, stats in sorted(groups[state]):
                new = RankedRegion(region, None, state, *((stats.ema, stats.samples) if stats else (None, 0)))
                old = prev.get(region)
                if old is None or old != new:
                    old = prev[region] = new
                entries.append(old)
        ranking = Ranking(entries=tuple(entries))
        self._memo = _Memo(snapshot, tuple(regions), now, quiet_until, ranking)
        return ranking

    # -- states and ejection ------------------------------------------------------------------------------------

    def _forget_others(self, regions: Sequence[str]) -> None:
        if not self._ejections:
            return
        keep = set(regions)
        for region in [r for r in self._ejections if r not in keep]:
            del self._ejections[region]

    def _state(self, region: str, stats: RegionStats | None, now: float) -> RegionState:
        """Precedence: failing (ejected) > unmeasured (too few samples) > stale (too old) > healthy."""
        if stats is None:
            return RegionState.UNMEASURED
        if self._ejected(region, stats, now):
            return RegionState.FAILING
        if stats.ema is None or stats.samples < self.settings.min_samples:
            return RegionState.UNMEASURED
        if stats.last_sample_at is None or now - stats.last_sample_at > self.limits.ttl:
            return RegionState.STALE
        return RegionState.HEALTHY

    def _ejected(self, region: str, stats: RegionStats, now: float) -> bool:
        """Update the region's ejection memory from its counters; True while it stays out of the ranking."""
        failed_out = stats.consecutive_failures >= self.settings.max_failures
        ejection = self._ejections.get(region)
        if ejection is None:  # never ejected: nothing to remember until it fails out
            if not failed_out:
                return False
            ejection = self._ejections[region] = _Ejection()
        max_ejection = self.limits.max_ejection
        failed_at = stats.last_failure_at if stats.last_failure_at is not None else now
        if ejection.ejected_at is None:
            if not failed_out:
                return False
            if ejection.returned_at is not None and max_ejection > 0:  # forgive one per max_ejection of health
                healthy_for = failed_at - ejection.returned_at
                ejection.count = max(0, ejection.count - int(healthy_for // max_ejection))
            ejection.count += 1
            ejection.ejected_at = failed_at
            return True
        clean_since = stats.last_failure_at if stats.last_failure_at is not None else ejection.ejected_at
        if stats.consecutive_failures == 0:
            if now - clean_since >= self._backoff(ejection.count):
                ejection.ejected_at = None  # answered without a failure for the whole back-off: back in
                ejection.returned_at = now
                return False
            self._returns_at = min(self._returns_at, clean_since + self._backoff(ejection.count))
        return True

    # -- hysteresis of #1 ---------------------------------------------------------------------------------------

    def _pick_leader(self, healthy: list[str], snapshot: TrackerSnapshot) -> str | None:
        """The published #1 among `healthy` (sorted by EMA): sticky, but never one whose latest probe failed."""
        state = self._leader
        answering = [r for r in healthy if snapshot.regions[r].consecutive_failures == 0]
        candidates = (answering or healthy) if self.settings.leader_yields_on_failure else healthy
        if not candidates:
            state.region, state.streak, state.seen = None, 0, ()
            return None
        if state.region not in candidates:  # no leader yet, or it left, or its latest probe failed
            state.region, state.streak = candidates[0], 0
        leader = state.region
        challenger = next((r for r in candidates if r != leader), None)
        seen = _fingerprint(snapshot, leader, challenger)
        new_information = seen != state.seen
        state.seen = seen
        if challenger is None or candidates[0] == leader or not self._leads(snapshot, challenger, leader):
            state.streak = 0
            return leader
        if new_information or state.streak == 0:  # a lead that just appeared is itself news
            state.streak += 1
        if state.streak >= self.settings.switch_after:
            state.region, state.streak = challenger, 0
            state.seen = _fingerprint(snapshot, challenger, next(r for r in candidates if r != challenger))
        return state.region

    def _leads(self, snapshot: TrackerSnapshot, challenger: str, leader: str) -> bool:
        """Whether the challenger's EMA beats the leader's by both margins (>=, so zero margins mean plain order)."""
        leader_ema, challenger_ema = _ema(snapshot, leader), _ema(snapshot, challenger)
        lead = leader_ema - challenger_ema
        return lead >= self.settings.margin_absolute and lead >= self.settings.margin_relative * leader_ema


_CLOCK_MARGIN = 0.001  # seconds: how much earlier than its exact time a clock-driven change is looked for


@dataclass(frozen=True, slots=True)
class _Memo:
    """An evaluation, and until when the clock alone cannot change it."""

    snapshot: TrackerSnapshot
    regions: tuple[str, ...]
    evaluated_at: float
    quiet_until: float
    ranking: Ranking


def _fingerprint(snapshot: TrackerSnapshot, leader: str, challenger: str | None) -> tuple[object, ...]:
    """What changes only when the leader or the challenger got a new result (or the challenger changed)."""
    def counts(region: str | None) -> tuple[int, int]:
        stats = snapshot.regions.get(region) if region is not None else None
        return (stats.samples, stats.failures_total) if stats is not None else (0, 0)

    return (leader, challenger, counts(leader), counts(challenger))


def _ema(snapshot: TrackerSnapshot, region: str) -> float:
    stats = snapshot.regions.get(region)
    return math.inf if stats is None or stats.ema is None else stats.ema


# -- settings -------------------------------------------------------------------------------------------------------


class RankingSettingError(ValueError):
    """A ranking setting that does not fit a target's probe interval; str() is `ranking.<field>: <problem>`."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"ranking.{field}: {problem}")


@dataclass(frozen=True, slots=True)
class RankingLimits:
    """The time limits of a trusted ranking for one probe interval (interval-relative defaults filled in)."""

    ttl: float
    base_ejection: float
    max_ejection: float


class RankingSettings(BaseModel):
    """The `ranking:` section of the configuration, written once: the config schema validates it, the policy
    reads it. Durations take seconds or `500ms`, `90s`, `5m`. Interval-relative defaults (None) are filled in per
    target, from that target's probe interval (`limits`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    policy: Literal["trusted", "plain"] = "trusted"
    max_failures: int = Field(default=DEFAULT_MAX_FAILURES, ge=1)
    ttl: float | None = Field(default=None, gt=0)  # None: 3 * interval
    min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=1)
    margin_relative: float = Field(default=DEFAULT_MARGIN_RELATIVE, ge=0, lt=1)
    margin_absolute: float = Field(default=DEFAULT_MARGIN_ABSOLUTE, ge=0)
    switch_after: int = Field(default=DEFAULT_SWITCH_AFTER, ge=1)
    base_ejection: float | None = Field(default=None, ge=0)  # None: 1 * interval
    max_ejection: float | None = Field(default=None, ge=0)  # None: 10 * interval (at least base_ejection)
    leader_yields_on_failure: bool = True

    @field_validator("ttl", "margin_absolute", "base_ejection", "max_ejection", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    def limits(self, interval: float) -> RankingLimits:
        """The time limits for a target probed every `interval` seconds; RankingSettingError when they do not fit
        it (a ttl must exceed the interval; max_ejection must not be below base_ejection)."""
        if not (interval > 0 and math.isfinite(interval)):
            raise RankingSettingError("interval", "must be a finite number > 0")
        ttl = DEFAULT_TTL_INTERVALS * interval if self.ttl is None else self.ttl
        base = DEFAULT_BASE_EJECTION_INTERVALS * interval if self.base_ejection is None else self.base_ejection
        longest = self.max_ejection
        if longest is None:
            longest = max(DEFAULT_MAX_EJECTION_INTERVALS * interval, base)
        if not interval < ttl < math.inf:
            raise RankingSettingError("ttl", f"must be a finite time > the probe interval ({interval:g}s)")
        if not base <= longest < math.inf:
            raise RankingSettingError("max_ejection", "must be a finite time >= base_ejection")
        return RankingLimits(ttl=ttl, base_ejection=base, max_ejection=longest)


def policy_for(settings: RankingSettings, interval: float) -> RankingPolicy:
    """The ranking policy `settings` ask for, for a target probed every `interval` seconds."""
    if settings.policy == "plain":
        return PlainRanking()
    return TrustedRanking(interval, settings)
