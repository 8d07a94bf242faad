"""/metrics at scale (issue 15): kept per-target parts, gzip segments compressed once, the refresher thread."""

from __future__ import annotations

import gc
import gzip
import time
import zlib
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from region_latency.export import metrics_cache
from region_latency.export.families import TARGET_FAMILIES
from region_latency.export.metrics_cache import MetricsCache, snapshot_generation
from region_latency.export.prometheus import ExporterRegistry, RegionLatencyCollector
from region_latency.export.text import render_targets
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import TrustedRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

REGIONS = [f"r-{i:02d}" for i in range(12)]


def make_states(n: int = 4) -> list[TargetState]:
    states = [TargetState(TargetInfo(f"t{i}", "bedrock-runtime", "https"), REGIONS, RegionLatencyTracker(),
                          TrustedRanking(15.0, min_samples=1)) for i in range(n)]
    for state in states:
        for j, region in enumerate(REGIONS):
            state.record(region, ProbeResult(0.01 * (j + 1), {"connect": 0.004, "ttfb": 0.01 * (j + 1)}, status=200))
        state.record(REGIONS[-1], ProbeResult.failure(ErrorKind.TIMEOUT, "no answer"))
    return states


def make_cache(states: list[TargetState], *, refresh_interval: float) -> MetricsCache:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RegionLatencyCollector(lambda: [s.snapshot() for s in states]))
    metrics = ExporterRegistry(registry, CollectorRegistry(), lambda: [s.snapshot() for s in states])
    return MetricsCache(metrics, lambda: snapshot_generation(metrics.snapshots()), refresh_interval=refresh_interval)


@pytest.fixture
def deflates(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every piece the cache compresses, in order."""
    seen: list[bytes] = []
    real = metrics_cache._deflate_segment

    def counting(piece: bytes) -> bytes:
        seen.append(piece)
        return real(piece)

    monkeypatch.setattr(metrics_cache, "_deflate_segment", counting)
    yield seen


def test_gzip_answer_is_one_member_holding_the_plain_answer() -> None:
    states = make_states()
    cache = make_cache(states, refresh_interval=0)
    plain = cache.get("text/plain", None).body
    body = cache.get("text/plain", "gzip").body
    assert gzip.decompress(body) == plain
    member = zlib.decompressobj(wbits=31)  # one gzip member, read to its end: nothing left over
    assert member.decompress(body) == plain and member.eof and not member.unused_data
    assert plain.decode() == render_targets([s.snapshot() for s in states])  # no runtime collectors here


def test_a_result_compresses_only_the_parts_it_changed(deflates: list[bytes]) -> None:
    states = make_states()
    cache = make_cache(states, refresh_interval=0)
    cache.get("text/plain", "gzip")
    first = len(deflates)
    assert first > 4 * len(TARGET_FAMILIES) // 2  # headers and every non-empty part of four targets
    deflates.clear()
    states[2].record(REGIONS[3], ProbeResult(0.0305, {"connect": 0.004, "ttfb": 0.0305}, status=200))
    body = cache.get("text/plain", "gzip").body
    assert 0 < len(deflates) <= len(TARGET_FAMILIES)  # parts of target t2 only
    assert all(b'target="t2"' in piece for piece in deflates)
    assert gzip.decompress(body) == cache.get("text/plain", None).body


def test_kept_parts_write_again_only_the_region_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    from region_latency.export import text

    states = make_states(1)
    cache = make_cache(states, refresh_interval=0)
    cache.get("text/plain", None)
    written: list[str] = []
    real = text.TargetText._region_lines

    def counting(self: text.TargetText, snap: object, region: str) -> tuple[str, ...]:
        written.append(region)
        return real(self, snap, region)  # type: ignore[arg-type]

    monkeypatch.setattr(text.TargetText, "_region_lines", counting)
    states[0].record(REGIONS[0], ProbeResult(0.0101, {"connect": 0.004, "ttfb": 0.0101}, status=200))
    assert cache.get("text/plain", None).body.decode() == render_targets([states[0].snapshot()])
    assert written == [REGIONS[0]]


def test_the_refresher_renders_between_scrapes_and_ends_with_its_cache() -> None:
    states = make_states(2)
    cache = make_cache(states, refresh_interval=0.02)
    cache.get("text/plain", "gzip")  # the first scrape starts the refresher
    renders, refreshes = cache.renders, cache.refreshes
    states[0].record(REGIONS[1], ProbeResult(0.05, {"connect": 0.004, "ttfb": 0.05}, status=200))
    deadline = time.monotonic() + 10
    while cache.refreshes == refreshes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.refreshes > refreshes
    body = cache.get("text/plain", "gzip").body
    assert cache.renders == renders  # the scrape found the parts up to date: no render on its path
    assert gzip.decompress(body).decode() == render_targets([s.snapshot() for s in states])
    thread = cache._refresher
    assert thread is not None and thread.is_alive()
    del cache
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_targets_that_leave_take_their_parts_along() -> None:
    states = make_states(3)
    cache = make_cache(states, refresh_interval=0)
    cache.get("text/plain", "gzip")
    states.pop(1)
    body = cache.get("text/plain", "gzip").body
    assert b'target="t1"' not in gzip.decompress(body)
    assert len(cache._texts) == 2


def test_a_rank_change_writes_only_the_ranking_lines_of_the_regions_it_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    """One result that takes #1 moves every other region's rank: their rank and state lines are written again, not
    their other lines (at 1,000 pairs of equal latency that was most of the /metrics writing)."""
    from region_latency.export import text

    states = make_states(1)
    cache = make_cache(states, refresh_interval=0)
    cache.get("text/plain", None)
    written: list[tuple[str, bool]] = []  # (region, everything written)
    real = text.TargetText._region_lines

    def counting(self: text.TargetText, snap: object, region: str, kept: tuple[str, ...] | None = None
                 ) -> tuple[str, ...]:
        written.append((region, kept is None))
        return real(self, snap, region, kept)  # type: ignore[arg-type]

    monkeypatch.setattr(text.TargetText, "_region_lines", counting)
    for _ in range(3):  # the slowest answering region becomes the fastest: every rank below it moves
        states[0].record(REGIONS[-2], ProbeResult(0.001, {"connect": 0.001, "ttfb": 0.001}, status=200))
    assert cache.get("text/plain", None).body.decode() == render_targets([states[0].snapshot()])
    assert [region for region, whole in written if whole] == [REGIONS[-2]]
    assert len([region for region, whole in written if not whole]) >= len(REGIONS) - 3


def test_only_the_families_that_say_so_follow_the_ranking() -> None:
    """A REGION-scoped family not marked `follows_ranking` reads nothing of the ranking: the same samples under any
    ranking (else a rank change would leave its kept lines stale)."""
    import dataclasses

    from region_latency.ranking import EMPTY_RANKING

    snap = make_states(1)[0].snapshot()
    other = dataclasses.replace(snap, ranking=EMPTY_RANKING)
    followers = set()
    for family in TARGET_FAMILIES:
        if family.read_region is None:
            continue
        differs = any(list(family.read_region(snap, r)) != list(family.read_region(other, r)) for r in REGIONS)
        assert differs <= family.follows_ranking, family.name
        if differs:
            followers.add(family.name)
    assert followers == {"region_latency_rank", "region_latency_region_state"}
