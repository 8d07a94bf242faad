"""/metrics answers: rendered once per change and shared by every scrape, in the format and encoding asked for.

The per-target families come from export/text.py (the fast writer of the family table), kept per target and
written again only where a region changed; the runtime ones and every other format from prometheus_client's own
renderers.

The gzip answer is one gzip member whose deflate stream is made of independently compressed segments, one per
(family, target) part and one per family header, each ended by a sync flush (byte-aligned, no back-reference into
another segment): a segment is compressed once and reused until its part changes; only the trailer's CRC-32 runs
over the whole text (C speed: ~0.3 ms for 2 MB). Any gzip reader reads it (a single member: no reliance on
multi-member support). Segments are deflated by ISA-L (the `isal` package) at its level 1: ~30 times zlib's level
1 (0.2 ms against 7 ms for 2 MB of /metrics text), for an answer about 1.5 times larger.

A refresher thread (started by the first scrape, every REFRESH_INTERVAL seconds, only when something changed)
brings the targets' parts up to date between scrapes, so that a scrape finds at most a few seconds' worth of
changed regions to write: with 1,000 pairs probed every 15 s, every region changes between two scrapes of
Prometheus, and writing them all on the scrape path would make the scrape wait for it.
"""

from __future__ import annotations

import gzip
import logging
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from isal import isal_zlib
from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted

from region_latency.export.families import TARGET_FAMILIES, target_identity
from region_latency.export.prometheus import ExporterRegistry
from region_latency.export.server import Response
from region_latency.export.text import TargetText, header
from region_latency.state import TargetSnapshot

_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_VARIANTS = 16  # distinct (format, gzip) answers kept; Accept headers are the client's to vary
REFRESH_INTERVAL = 2.0  # seconds between background refreshes of the per-target parts (0: none)


@dataclass(frozen=True, slots=True)
class _Rendered:
    generation: Hashable  # of the targets' snapshots it shows
    rendered_at: float  # when its runtime part was rendered
    response: Response


@dataclass(frozen=True, slots=True)
class _TargetsPart:
    """The per-target families of one generation: the text's pieces in order, and their compressed segments."""

    generation: Hashable
    pieces: tuple[bytes, ...]  # family headers and (family, target) parts, in /metrics order
    text: bytes  # the pieces joined (made when a plain answer is asked for)
    segments: tuple[bytes, ...] | None  # each piece deflated on its own and sync-flushed (made for gzip)
    crc: int  # CRC-32 of `text`
    size: int


# A gzip member header: deflate, no name, mtime 0 (answers of equal content are equal bytes), OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_HEADERS = tuple(header(family).encode() for family in TARGET_FAMILIES)


def _deflate_segment(piece: bytes) -> bytes:
    """`piece` as raw deflate blocks that stand alone (wbits -15: no header), sync-flushed."""
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    return bytes(compressor.compress(piece) + compressor.flush(isal_zlib.Z_SYNC_FLUSH))


def _deflate_last(piece: bytes) -> bytes:
    """`piece` as the stream's last deflate blocks (Z_FINISH sets the final-block bit)."""
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    return bytes(compressor.compress(piece) + compressor.flush(isal_zlib.Z_FINISH))


class _SegmentCache:
    """Compressed segments by the piece they were made from (the same bytes object while a part is unchanged)."""

    def __init__(self) -> None:
        self._by_piece: dict[int, tuple[bytes, bytes]] = {}  # id(piece) -> (piece, segment): the piece pins its id

    def segments(self, pieces: Sequence[bytes]) -> tuple[bytes, ...]:
        old, new = self._by_piece, {}
        out = []
        for piece in pieces:
            if not piece:
                continue
            known = old.get(id(piece))
            segment = known[1] if known is not None and known[0] is piece else _deflate_segment(piece)
            new[id(piece)] = (piece, segment)
            out.append(segment)
        self._by_piece = new  # only what the latest answer uses: dropped parts free their segments
        return tuple(out)


class MetricsCache:
    """/metrics answers rendered once and shared by every scrape until what they show changes.

    The per-target families change only when a probe result lands or the ranking moves (a new snapshot
    generation); they are written by export/text.py and compressed once per generation. The runtime families
    (build info, process, platform, GC) change all the time but are a few dozen lines: when the answer is over
    `max_age` seconds old, only they are rendered again and appended (a copy of the gzip compressor that has
    taken the per-target part finishes the stream: ~0.3 ms, cheap enough for the event loop). A scraper that does
    not accept the text format (OpenMetrics only) gets prometheus_client's own OpenMetrics rendering, under the
    same rules. Renders happen under a lock, so scrapes that arrive together wait for one render instead of
    doing it N times; `cached` never waits for it (the event loop asks it, and hands a scrape to a worker only
    when a render of the per-target part is due).
    """

    def __init__(self, metrics: ExporterRegistry, generation: Callable[[], Hashable], *, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, refresh_interval: float = REFRESH_INTERVAL) -> None:
        self._metrics = metrics
        self._generation = generation
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], _Rendered] = {}
        self._targets: _TargetsPart | None = None
        # per target identity (its labels: name, service, probe, ip_family): its parts, kept
        self._texts: dict[tuple[str, str, str, str | None], TargetText] = {}
        self._segments = _SegmentCache()
        self._runtime: tuple[float, bytes] | None = None  # (rendered at, text of the runtime families)
        self.renders = 0  # renders on the scrape path (per-target families, or an OpenMetrics answer): tests, debugging
        self.refreshes = 0  # renders by the refresher thread
        self.refresh_interval = refresh_interval
        self._refresher: threading.Thread | None = None

    def cached(self, accept: str | None, accept_encoding: str | None) -> Response | None:
        """The answer for a scrape with these headers without waiting: cached, or with only its runtime part
        refreshed; None when the per-target part must be rendered (or a render is under way)."""
        variant = _variant(accept, accept_encoding)
        entry = self._entries.get(variant)
        generation = self._generation()
        if entry is None or entry.generation != generation:
            return None
        if self._clock() - entry.rendered_at <= self.max_age:
            return entry.response
        if not variant[0].startswith("text/plain") or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._answer(variant, generation, self._clock())
        finally:
            self._lock.release()

    def get(self, accept: str | None, accept_encoding: str | None) -> Response:
        """The answer for a scrape with these headers, rendered if needed."""
        variant = _variant(accept, accept_encoding)
        if self._refresher is None and self.refresh_interval > 0:
            self._start_refresher()
        with self._lock:
            return self._answer(variant, self._generation(), self._clock())

    def _answer(self, variant: tuple[str, bool], generation: Hashable, now: float) -> Response:
        """Under the lock: the cached answer if still good, else a new one."""
        entry = self._entries.get(variant)
        if entry is not None and entry.generation == generation and now - entry.rendered_at <= self.max_age:
            return entry.response
        content_type, compress = variant
        if content_type.startswith("text/plain"):
            runtime_at, body = self._text(generation, now, compress)
        else:
            encoder, _ = choose_encoder(content_type)
            runtime_at, body = now, encoder(self._metrics.registry)
            self.renders += 1
            if compress:
                body = gzip.compress(body, compresslevel=1, mtime=0)
        response = _response(content_type, compress, body)
        if len(self._entries) >= MAX_VARIANTS:
            self._entries.clear()
        self._entries[variant] = _Rendered(generation, runtime_at, response)
        return response

    def _text(self, generation: Hashable, now: float, compress: bool) -> tuple[float, bytes]:
        targets = self._targets
        if targets is None or targets.generation != generation:
            targets = self._targets = self._render_targets(generation)
            self.renders += 1
        if compress and targets.segments is None:
            targets = self._targets = _with_segments(targets, self._segments.segments(targets.pieces))
        if self._runtime is None or now - self._runtime[0] > self.max_age:
            self._runtime = (now, generate_latest(self._metrics.runtime))
        runtime_at, runtime = self._runtime
        if not compress:
            return runtime_at, targets.text + runtime
        assert targets.segments is not None
        tail = _deflate_last(runtime)
        crc = zlib.crc32(runtime, targets.crc)
        size = (targets.size + len(runtime)) & 0xFFFFFFFF
        return runtime_at, b"".join((_GZIP_HEADER, *targets.segments, tail, struct.pack("<II", crc, size)))

    def refresh(self) -> bool:
        """Bring the per-target parts (text and gzip segments) up to the snapshots now, off the scrape path;
        False when nothing changed, or a scrape is rendering (it does the same)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            generation = self._generation()
            targets = self._targets
            if targets is not None and targets.generation == generation:
                return False
            targets = self._render_targets(generation)
            self._targets = _with_segments(targets, self._segments.segments(targets.pieces))
            self.refreshes += 1
            return True
        finally:
            self._lock.release()

    def _start_refresher(self) -> None:
        with self._lock:
            if self._refresher is None:
                self._refresher = threading.Thread(target=_refresh_loop, args=(weakref.ref(self),),
                                                   name="metrics-refresh", daemon=True)
                self._refresher.start()

    def _render_targets(self, generation: Hashable) -> _TargetsPart:
        """The per-target families: each target's parts brought up to its snapshot (only changed regions are
        written again), then laid out family by family."""
        texts = []
        seen = set()
        for snap in self._metrics.snapshots():
            ident = target_identity(snap)  # each IP family of a target is a series identity of its own
            text = self._texts.get(ident)
            if text is None:
                text = self._texts[ident] = TargetText()
            text.update(snap)
            texts.append(text)
            seen.add(ident)
        for gone in set(self._texts) - seen:
            del self._texts[gone]
        pieces: list[bytes] = []
        for index, family_header in enumerate(_HEADERS):
            pieces.append(family_header)
            pieces.extend(text.parts[index] for text in texts)
        body = b"".join(pieces)
        return _TargetsPart(generation, tuple(pieces), body, None, zlib.crc32(body), len(body))


def _refresh_loop(ref: weakref.ref[MetricsCache]) -> None:
    """The refresher thread: ends when its cache is gone (no reference kept between rounds)."""
    while True:
        cache = ref()
        if cache is None:
            return
        interval = cache.refresh_interval
        del cache
        time.sleep(interval)
        cache = ref()
        if cache is None:
            return
        try:
            cache.refresh()
        except Exception:  # a bug here must not end the refresher silently; scrapes render on their own anyway
            logging.getLogger(__name__).exception("refreshing the /metrics parts failed")
        del cache


def _with_segments(part: _TargetsPart, segments: tuple[bytes, ...]) -> _TargetsPart:
    return _TargetsPart(part.generation, part.pieces, part.text, segments, part.crc, part.size)


def render_filtered(metrics: ExporterRegistry, names: Sequence[str], accept: str | None,
                    accept_encoding: str | None) -> Response:
    """Only the families named (`/metrics?name[]=...`): prometheus_client's filter, rendered per request."""
    content_type, compress = _variant(accept, accept_encoding)
    encoder, _ = choose_encoder(content_type)
    body = encoder(metrics.registry.restricted_registry(names))
    if compress:
        body = gzip.compress(body, compresslevel=1)
    return _response(content_type, compress, body, vary=False)


def _response(content_type: str, compress: bool, body: bytes, *, vary: bool = True) -> Response:
    headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
    if compress:
        headers += (("Content-Encoding", "gzip"),)
    if vary:
        headers += (("Vary", "Accept, Accept-Encoding"),)
    return Response(200, headers, body)


def _variant(accept: str | None, accept_encoding: str | None) -> tuple[str, bool]:
    try:
        _, content_type = choose_encoder(_prefer_text(accept or ""))
    except (TypeError, ValueError):  # e.g. `version=abc`: prometheus_client cannot compare it; Accept is a wish
        content_type = _TEXT
    return content_type, gzip_accepted(accept_encoding or "")


def _prefer_text(accept: str) -> str:
    """Serve the classic text format whenever the scraper accepts it, even when it prefers OpenMetrics.

    Nothing here needs OpenMetrics (no exemplars, no created timestamps), and the text format is what
    export/text.py writes fast. Prometheus lists text/plain;version=0.0.4 in its Accept header.
    """
    offers = [part.split(";")[0].strip() for part in accept.split(",")]
    return "text/plain" if "text/plain" in offers else accept


def snapshot_generation(snapshots: Sequence[TargetSnapshot]) -> Hashable:
    """Changes whenever anything /metrics shows of the targets may have changed (results, re-ranking, reload)."""
    return tuple((snap.info, snap.regions, snap.generation) for snap in snapshots)
