"""Ranking policy on top of the tracker's EMA: which regions are ranked, and in what order.

`PlainRanking` is the design plan's sort exactly (ascending EMA, unmeasured last). Policies are
evaluated when probe results arrive, never on a scrape, so what a scrape shows does not depend
on how often it is scraped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from region_latency.tracker import TrackerSnapshot


class RegionState(StrEnum):
    """What a ranking thinks of a region: exported as the `state` label of region_latency_region_state."""

    HEALTHY = "healthy"  # measured, answering, fresh: ranked
    FAILING = "failing"  # its latest probes failed
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
        """EMA of #2 minus EMA of #1 (seconds): how clearly #1 leads; None with fewer than two ranked."""
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


def policy_from_config(settings: Mapping[str, object], *, interval: float) -> RankingPolicy:
    """The ranking policy the configuration asks for (`ranking:` section; interval is the target's)."""
    del settings, interval
    return PlainRanking()
