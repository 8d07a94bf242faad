"""The family table (export/families.py) in Prometheus' text format, written straight from the snapshots.

Byte for byte what prometheus_client's `generate_latest` makes of the Collector (export/prometheus.py) reading
the same table (a unit test holds the two together), in a twelfth of the time: prometheus_client builds a Sample
with a label dict per series, then sorts and escapes every dict on every scrape (~16 ms for 35 regions x 2
targets, with the GIL held). Here each series' label block is escaped once and reused until the labels change,
and values are formatted by prometheus_client's own `floatToGoString`. This module is only a serializer: which
families exist, in what order, and which series they hold is the table's business.

`TargetText` keeps one target's part of every family between scrapes and writes again only the regions whose
own state changed (a probe result, their ranking entry, the target's options): what a scrape costs follows what
changed, not how many pairs exist (issue 15). `render_targets` is the same writer from nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TypeVar, cast

from prometheus_client.utils import floatToGoString

from region_latency.export.families import (
    TARGET_FAMILIES,
    AnyFamily,
    HistogramFamily,
    Scope,
    entries_by_region,
    target_identity,
)
from region_latency.state import TargetSnapshot

Source = TypeVar("Source")

_float_to_go = cast(Callable[[float], str], floatToGoString)  # prometheus_client's number format (untyped)

# Counts, ranks, 0/1 states, bucket counts: most values are small ints, formatted once here (ints only:
# a dict lookup would take -0.0 for 0).
_SMALL_INTS = {n: _float_to_go(n) for n in range(4096)}


def _number(value: float) -> str:
    """floatToGoString(value), faster for small ints."""
    if type(value) is int:
        text = _SMALL_INTS.get(value)
        if text is not None:
            return text
    return _float_to_go(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _block(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}` with names sorted, as prometheus_client writes a label set (nothing for no labels)."""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs))
    return "{" + inner + "}" if inner else ""


class _Blocks:
    """The label blocks of one series identity (a target, or one region of it): the plain one, and those with a
    family's extra labels (phase, state, reason, le, ...), each escaped once, on first use."""

    __slots__ = ("_extra", "_histograms", "_pairs", "plain")

    def __init__(self, names: tuple[str, ...], values: tuple[str | None, ...]) -> None:
        # an optional label (ip_family) whose value is None is left out, as prometheus.py leaves it out
        self._pairs = tuple((name, value) for name, value in zip(names, values, strict=True) if value is not None)
        self.plain = _block(self._pairs)
        self._extra: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._histograms: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}

    def extra(self, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        if not values:
            return self.plain
        key = (names, values)
        block = self._extra.get(key)
        if block is None:
            block = self._extra[key] = _block((*self._pairs, *zip(names, values, strict=True)))
        return block

    def buckets(self, names: tuple[str, ...], values: tuple[str, ...], le: tuple[str, ...]) -> tuple[str, ...]:
        """One block per histogram bucket: the `le` label added."""
        key = (names, values, le)
        blocks = self._histograms.get(key)
        if blocks is None:
            pairs = (*self._pairs, *zip(names, values, strict=True))
            blocks = self._histograms[key] = tuple(_block((*pairs, ("le", bound))) for bound in le)
        return blocks


@lru_cache(maxsize=4096)
def _blocks(names: tuple[str, ...], values: tuple[str | None, ...]) -> _Blocks:
    return _Blocks(names, values)


def _header(family: AnyFamily[Source]) -> str:
    help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {help_text}\n# TYPE {family.name} {family.kind.value}\n"


def render(table: Sequence[AnyFamily[Source]], sources: Sequence[Source],
           identity: Callable[[Source], tuple[str | None, ...]]) -> str:
    """Every family of `table` over `sources`, as `generate_latest` writes it; `identity` gives a source's values
    of the labels its families' scope starts with (a snapshot: target, service, probe)."""
    out: list[str] = []
    append = out.append
    fmt = _number
    idents = [identity(source) for source in sources]
    known: list[dict[str | None, _Blocks]] = [{} for _ in sources]  # by region (None: the source itself)
    for family in table:
        append(_header(family))
        name, scope_names, extra_names = family.name, family.scope.labels, family.extra_labels
        for source, ident, blocks_by_region in zip(sources, idents, known, strict=True):
            if isinstance(family, HistogramFamily):
                le = family.le_labels_for(source)
                for region, extra, (cumulative, total) in family.read(source):
                    blocks = blocks_by_region.get(region) or _remember(blocks_by_region, scope_names, ident, region)
                    for block, count in zip(blocks.buckets(extra_names, extra, le), cumulative, strict=True):
                        append(f"{name}_bucket{block} {fmt(count)}\n")
                    plain = blocks.extra(extra_names, extra)
                    append(f"{name}_count{plain} {fmt(cumulative[-1])}\n")
                    append(f"{name}_sum{plain} {fmt(total)}\n")
                continue
            for region, extra, value in family.read(source):
                blocks = blocks_by_region.get(region) or _remember(blocks_by_region, scope_names, ident, region)
                append(f"{name}{blocks.extra(extra_names, extra) if extra else blocks.plain} {fmt(value)}\n")
    return "".join(out)


def _remember(blocks_by_region: dict[str | None, _Blocks], scope_names: tuple[str, ...],
              ident: tuple[str | None, ...], region: str | None) -> _Blocks:
    blocks = blocks_by_region[region] = _blocks(scope_names, ident if region is None else (*ident, region))
    return blocks


def header(family: AnyFamily[Source]) -> str:
    """The `# HELP` and `# TYPE` lines of a family."""
    return _header(family)


def render_targets(snapshots: Sequence[TargetSnapshot]) -> str:
    """The text of every region_latency_* family (not build info), as `generate_latest` would write it."""
    return render(TARGET_FAMILIES, snapshots, target_identity)


class TargetText:
    """One target's part of every family of TARGET_FAMILIES (`parts[i]`: the lines of family i, as bytes), kept
    from one snapshot to the next: a region's lines are written again only when they can have changed: all of them
    when its version moved (bumped by a probe result of its own, the only way its tracker stats, counters and
    latest probe change), only those of the families that follow the ranking (rank, state) when just its ranking
    entry moved, which another region's result does (at 1,000 pairs of equal latency, rank changes are most of
    the regions written). New options (a reload) write everything again."""

    __slots__ = ("_blocks", "_ident", "_options", "_ranked", "_regional", "_regions", "parts", "snapshot")

    def __init__(self) -> None:
        self.snapshot: TargetSnapshot | None = None
        self.parts: tuple[bytes, ...] = ()
        self._ident: tuple[str | None, ...] = ()
        self._regional = tuple(i for i, family in enumerate(TARGET_FAMILIES) if family.scope is Scope.REGION)
        # columns (positions in _regional) of the families whose lines come from the ranking entry
        self._ranked = frozenset(column for column, i in enumerate(self._regional)
                                 if TARGET_FAMILIES[i].follows_ranking)
        # region -> (its version, its ranking entry, its lines of each REGION-scoped family, in table order)
        self._regions: dict[str, tuple[object, object, tuple[str, ...]]] = {}
        self._blocks: dict[str, _Blocks] = {}  # region -> its label blocks (escaped once per target and region)
        self._options: object = None

    def update(self, snap: TargetSnapshot) -> bool:
        """Bring the parts up to `snap`; False when `snap` is the one they show already."""
        if snap is self.snapshot:
            return False
        ident = target_identity(snap)
        if ident != self._ident:
            self._ident, self._regions, self._blocks = ident, {}, {}
        old = self.parts
        previous = self.snapshot
        if snap.metrics is not self._options:
            self._options, self._regions, old = snap.metrics, {}, ()
        if previous is None or previous.regions != snap.regions:
            old = ()  # every part laid out again
        regions = self._regions
        entries = entries_by_region(snap)
        versions = snap.region_versions
        changed: set[int] = set()  # columns (REGION-scoped families, in order) some region's lines changed in
        for region in snap.regions:
            version, entry = versions.get(region), entries.get(region)
            cached = regions.get(region)
            if cached is None or cached[0] != version:
                lines = self._region_lines(snap, region)
            elif cached[1] is not entry and cached[1] != entry:
                lines = self._region_lines(snap, region, cached[2])
            else:
                continue
            if cached is not None:
                changed.update(i for i, (new, was) in enumerate(zip(lines, cached[2], strict=True)) if new != was)
            regions[region] = (version, entry, lines)
        if len(regions) > len(snap.regions):
            for gone in set(regions) - set(snap.regions):
                del regions[gone]
                self._blocks.pop(gone, None)
        ranking_moved = previous is None or previous.ranking is not snap.ranking
        parts: list[bytes] = []
        column = 0
        for index, family in enumerate(TARGET_FAMILIES):
            if family.scope is Scope.REGION:
                if old and column not in changed:
                    part = old[index]
                else:
                    part = "".join([regions[region][2][column] for region in snap.regions]).encode()
                column += 1
            elif old and not ranking_moved:  # the target-wide families follow the ranking and the regions
                part = old[index]
            else:
                part = render((family,), (snap,), target_identity).removeprefix(_header(family)).encode()
            parts.append(old[index] if old and old[index] == part else part)  # unchanged: the same object
        self.parts, self.snapshot = tuple(parts), snap
        return True

    def _region_lines(self, snap: TargetSnapshot, region: str, kept: tuple[str, ...] | None = None
                      ) -> tuple[str, ...]:
        """The region's lines of every REGION-scoped family; with `kept` (its lines as they were), only the families
        that follow the ranking are written, the rest taken from `kept`."""
        blocks = self._blocks.get(region)
        if blocks is None:
            blocks = self._blocks[region] = _Blocks(Scope.REGION.labels, (*self._ident, region))
        out: list[str] = []
        fmt = _number
        for column, index in enumerate(self._regional):
            if kept is not None and column not in self._ranked:
                out.append(kept[column])
                continue
            family = TARGET_FAMILIES[index]
            name, extra_names = family.name, family.extra_labels
            lines: list[str] = []
            append = lines.append
            if isinstance(family, HistogramFamily):
                assert family.read_region is not None
                le = family.le_labels_for(snap)
                for extra, (cumulative, total) in family.read_region(snap, region):
                    for block, count in zip(blocks.buckets(extra_names, extra, le), cumulative, strict=True):
                        append(f"{name}_bucket{block} {fmt(count)}\n")
                    plain = blocks.extra(extra_names, extra)
                    append(f"{name}_count{plain} {fmt(cumulative[-1])}\n")
                    append(f"{name}_sum{plain} {fmt(total)}\n")
            else:
                assert family.read_region is not None
                for extra, value in family.read_region(snap, region):
                    append(f"{name}{blocks.extra(extra_names, extra) if extra else blocks.plain} {fmt(value)}\n")
            out.append("".join(lines))
        return tuple(out)
