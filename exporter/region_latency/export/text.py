"""The region_latency_* families in Prometheus' text format, written straight from the snapshots.

Byte for byte what prometheus_client's `generate_latest` makes of `prometheus.families()` (a unit test holds the
two together), in about a quarter of the time: prometheus_client builds a Sample with a label dict per series,
then sorts and escapes every dict on every scrape (~18 ms for 35 regions x 2 targets, with the GIL held). Here
each series' label block is escaped once and reused until the target's labels change, and values are formatted
by prometheus_client's own `floatToGoString`. What a family holds, and when a series is absent, follows
`prometheus.families()`; change both together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from prometheus_client.utils import floatToGoString

from region_latency.export.prometheus import HELP, NAMESPACE, PHASES
from region_latency.export.prometheus import bucket_bounds as _bucket_bounds
from region_latency.ranking import RegionState
from region_latency.state import TargetSnapshot

_STATES = tuple(RegionState)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _block(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}` with names sorted, as prometheus_client writes a label set."""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs)) + "}"


@lru_cache(maxsize=4096)
def _region_blocks(target: str, service: str, probe: str, region: str) -> tuple[str, ...]:
    """Every label block one region's series use, escaped once: [0] the plain series, then one per phase,
    one per ranking state and one per histogram bucket (the `le` label)."""
    base = {"target": target, "service": service, "probe": probe, "region": region}
    blocks = [_block(base.items())]
    blocks += [_block([*base.items(), ("phase", phase)]) for phase in PHASES]
    blocks += [_block([*base.items(), ("state", state.value)]) for state in _STATES]
    blocks += [_block([*base.items(), ("le", bound)]) for bound in _bucket_bounds()]
    return tuple(blocks)


_PHASE_AT = {phase: 1 + i for i, phase in enumerate(PHASES)}
_STATE_AT = {state: 1 + len(PHASES) + i for i, state in enumerate(_STATES)}
_BUCKETS_AT = 1 + len(PHASES) + len(_STATES)


@lru_cache(maxsize=256)
def _target_block(target: str, service: str, probe: str) -> str:
    return _block((("target", target), ("service", service), ("probe", probe)))


class _Lines:
    """One list of sample lines per family, filled target by target, joined in the families' order."""

    ORDER = ("ema_seconds", "samples", "rank", "ranking_info", "region_state", "rank_margin_seconds",
             "ranked_regions", "target_regions", "probe_success", "probe_duration_seconds",
             "probe_http_status_code", "last_probe_timestamp_seconds", "last_sample_timestamp_seconds",
             "consecutive_failures", "probes", "probe_failures", "sample_seconds")

    def __init__(self) -> None:
        self.by_family: dict[str, list[str]] = {name: [] for name in self.ORDER}

    def text(self) -> str:
        out: list[str] = []
        for short in self.ORDER:
            kind, help_text = HELP[short]
            name = f"{NAMESPACE}_{short}" + ("_total" if kind == "counter" else "")
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out.extend(self.by_family[short])
        return "".join(out)


def render_targets(snapshots: Sequence[TargetSnapshot]) -> str:
    """The text of every region_latency_* family (not build info), as `generate_latest` would write it."""
    lines = _Lines()
    f = lines.by_family
    n = NAMESPACE
    for snap in snapshots:
        info = snap.info
        tblock = _target_block(info.name, info.service, info.probe)
        f["target_regions"].append(f"{n}_target_regions{tblock} {floatToGoString(len(snap.regions))}\n")
        ranked = snap.ranking.ranked()
        f["ranked_regions"].append(f"{n}_ranked_regions{tblock} {floatToGoString(len(ranked))}\n")
        if snap.ranking.margin is not None:
            f["rank_margin_seconds"].append(f"{n}_rank_margin_seconds{tblock} {floatToGoString(snap.ranking.margin)}\n")
        for entry in ranked:
            block = _block((("target", info.name), ("service", info.service), ("probe", info.probe),
                            ("rank", str(entry.rank)), ("region", entry.region)))
            f["ranking_info"].append(f"{n}_ranking_info{block} 1.0\n")
        states = {entry.region: entry for entry in snap.ranking.entries}
        for region in snap.regions:
            blocks = _region_blocks(info.name, info.service, info.probe, region)
            plain = blocks[0]
            stats = snap.tracker.regions.get(region)
            if stats is not None and stats.ema is not None:
                f["ema_seconds"].append(f"{n}_ema_seconds{plain} {floatToGoString(stats.ema)}\n")
            f["samples"].append(f"{n}_samples{plain} {floatToGoString(stats.samples if stats else 0)}\n")
            f["consecutive_failures"].append(
                f"{n}_consecutive_failures{plain} {floatToGoString(stats.consecutive_failures if stats else 0)}\n")
            if stats is not None and stats.last_sample_at is not None:
                f["last_sample_timestamp_seconds"].append(
                    f"{n}_last_sample_timestamp_seconds{plain} {floatToGoString(stats.last_sample_at)}\n")
            entry = states.get(region)
            if entry is not None and entry.rank is not None:
                f["rank"].append(f"{n}_rank{plain} {floatToGoString(entry.rank)}\n")
            current = entry.state if entry is not None else RegionState.UNMEASURED
            f["region_state"].extend(
                f"{n}_region_state{blocks[_STATE_AT[state]]} {'1.0' if state is current else '0.0'}\n"
                for state in _STATES)
            _probe_lines(f, snap, region, blocks)
    return lines.text()


def _probe_lines(f: dict[str, list[str]], snap: TargetSnapshot, region: str, blocks: tuple[str, ...]) -> None:
    n = NAMESPACE
    plain = blocks[0]
    last = snap.last_probe.get(region)
    if last is not None:
        f["probe_success"].append(f"{n}_probe_success{plain} {'1.0' if last.success else '0.0'}\n")
        f["last_probe_timestamp_seconds"].append(
            f"{n}_last_probe_timestamp_seconds{plain} {floatToGoString(last.at)}\n")
        f["probe_duration_seconds"].extend(
            f"{n}_probe_duration_seconds{blocks[_PHASE_AT[phase]]} {floatToGoString(last.phases[phase])}\n"
            for phase in PHASES if phase in last.phases)
        if last.status is not None:
            f["probe_http_status_code"].append(f"{n}_probe_http_status_code{plain} {floatToGoString(last.status)}\n")
    f["probes"].append(f"{n}_probes_total{plain} {floatToGoString(snap.probes_total.get(region, 0))}\n")
    for (failed_region, reason), count in snap.failures_total.items():
        if failed_region == region:
            block = _block((("target", snap.info.name), ("service", snap.info.service), ("probe", snap.info.probe),
                            ("region", region), ("reason", reason)))
            f["probe_failures"].append(f"{n}_probe_failures_total{block} {floatToGoString(count)}\n")
    hist = snap.histograms.get(region)
    if hist is not None:
        out = f["sample_seconds"]
        cumulative = 0
        for i, count in enumerate(hist.bucket_counts):
            cumulative += count
            out.append(f"{n}_sample_seconds_bucket{blocks[_BUCKETS_AT + i]} {floatToGoString(cumulative)}\n")
        out.append(f"{n}_sample_seconds_count{plain} {floatToGoString(cumulative)}\n")
        out.append(f"{n}_sample_seconds_sum{plain} {floatToGoString(hist.total)}\n")
