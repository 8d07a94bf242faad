"""/metrics answers: rendered once per change and shared by every scrape, in the format and encoding asked for.

The per-target families come from export/text.py (the fast writer of the family table), the runtime ones and
every other format from prometheus_client's own renderers.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted

from region_latency.export.prometheus import ExporterRegistry
from region_latency.export.server import Response
from region_latency.export.text import render_targets
from region_latency.state import TargetSnapshot

_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_VARIANTS = 16  # distinct (format, gzip) answers kept; Accept headers are the client's to vary


@dataclass(frozen=True, slots=True)
class _Rendered:
    generation: Hashable  # of the targets' snapshots it shows
    rendered_at: float  # when its runtime part was rendered
    response: Response


@dataclass(frozen=True, slots=True)
class _TargetsPart:
    """The per-target families of one generation, as text and as the start of a gzip stream."""

    generation: Hashable
    text: bytes
    gzip_head: bytes  # what the compressor emitted for `text`
    compressor: Any  # zlib compress object that has taken `text`; copied to append a runtime part and finish


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._generation = generation
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], _Rendered] = {}
        self._targets: _TargetsPart | None = None
        self._runtime: tuple[float, bytes] | None = None  # (rendered at, text of the runtime families)
        self.renders = 0  # full renders (per-target families, or an OpenMetrics answer): tests, debugging

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
            text = render_targets(self._metrics.snapshots()).encode()
            # Level 1: a third of level 6's time, ~20 % larger; and the bytes are reused by every scrape anyway.
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
            targets = self._targets = _TargetsPart(generation, text, compressor.compress(text), compressor)
            self.renders += 1
        if self._runtime is None or now - self._runtime[0] > self.max_age:
            self._runtime = (now, generate_latest(self._metrics.runtime))
        runtime_at, runtime = self._runtime
        if not compress:
            return runtime_at, targets.text + runtime
        finish = targets.compressor.copy()
        return runtime_at, targets.gzip_head + finish.compress(runtime) + finish.flush()


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
