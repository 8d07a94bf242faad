"""The HTTP side: /metrics, /regions (JSON), health and readiness, reload, and a small status page.

Routes and answers only; the server itself is export/server.py. Every handler reads snapshots, so no request
waits on a probe, and /metrics comes from bytes rendered once per change (MetricsCache).
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted

from region_latency import __version__
from region_latency.export.prometheus import ExporterRegistry
from region_latency.export.server import HttpServer, Request, Response
from region_latency.export.text import render_targets
from region_latency.state import TargetSnapshot

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WebHooks:
    """What the web side needs from the running exporter."""

    snapshots: Callable[[], Sequence[TargetSnapshot]]
    ready: Callable[[], bool]
    reload: Callable[[], str | None]  # returns an error message, or None on success


def regions_document(snapshots: Sequence[TargetSnapshot], *, service: str | None = None,
                     target: str | None = None) -> dict[str, Any]:
    """The /regions JSON: per target, every region in published order with its state."""
    out = []
    for snap in snapshots:
        if (service and snap.info.service != service) or (target and snap.info.name != target):
            continue
        regions = []
        for entry in snap.ranking.entries:
            stats = snap.tracker.regions.get(entry.region)
            last = snap.last_probe.get(entry.region)
            regions.append({
                "region": entry.region,
                "rank": entry.rank,
                "state": entry.state.value,
                "ema_seconds": entry.ema,
                "samples": entry.samples,
                "last_sample_at": stats.last_sample_at if stats else None,
                "consecutive_failures": stats.consecutive_failures if stats else 0,
                "failures_total": stats.failures_total if stats else 0,
                "last_probe": None if last is None else {
                    "at": last.at,
                    "success": last.success,
                    "phases_seconds": dict(last.phases),
                    "status": last.status,
                    "error": last.error,
                    "detail": last.detail,
                },
            })
        out.append({
            "name": snap.info.name,
            "service": snap.info.service,
            "probe": snap.info.probe,
            "fastest": snap.ranking.fastest,
            "margin_seconds": snap.ranking.margin,
            "regions": regions,
        })
    return {"generated_at": time.time(), "version": __version__, "targets": out}


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
        headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
        if compress:
            headers += (("Content-Encoding", "gzip"),)
        response = Response(200, (*headers, ("Vary", "Accept, Accept-Encoding")), body)
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


_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_VARIANTS = 16  # distinct (format, gzip) answers kept; Accept headers are the client's to vary


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


_Route = tuple[tuple[str, ...], Callable[[Request], Response]]


class ExporterApp:
    """Routes requests. Cheap answers (cached /metrics, health, readiness, errors) are given on the event loop;
    renders, /regions, the status page and reloads run on a worker thread."""

    def __init__(self, metrics: ExporterRegistry, hooks: WebHooks, *, metrics_max_age: float = 1.0) -> None:
        self.hooks = hooks
        self.metrics = metrics
        self.metrics_cache = MetricsCache(metrics, lambda: snapshot_generation(hooks.snapshots()),
                                          max_age=metrics_max_age)
        self._now: dict[str, _Route] = {
            "/-/healthy": (("GET", "HEAD"), lambda _r: Response.text(200, "Healthy.\n")),
            "/-/ready": (("GET", "HEAD"), self._ready),
        }
        self._later: dict[str, _Route] = {
            "/": (("GET", "HEAD"), self._index),
            "/regions": (("GET", "HEAD"), self._regions),
            "/-/reload": (("POST", "PUT"), self._reload),
        }

    def respond_now(self, request: Request) -> Response | None:
        path, method = request.path, request.method
        if path == "/metrics":
            if method == "OPTIONS":
                return Response(200, (("Allow", "OPTIONS, GET, HEAD"),))
            if method not in ("GET", "HEAD"):
                return _not_allowed(path, ("OPTIONS", "GET", "HEAD"))
            if request.query:
                return None
            return self.metrics_cache.cached(request.header("accept"), request.header("accept-encoding"))
        if path in self._later:
            allowed, _ = self._later[path]
            return None if request.method in allowed else _not_allowed(path, allowed)
        if path not in self._now:
            return Response.text(404, f"no such page: {path}\n")
        return self._route(self._now[path], request)

    def respond(self, request: Request) -> Response:
        if request.path == "/metrics":
            return self._metrics(request)
        return self._route(self._later[request.path], request)

    def _route(self, route: _Route, request: Request) -> Response:
        allowed, handler = route
        if request.method not in allowed:
            return _not_allowed(request.path, allowed)
        return handler(request)

    def _metrics(self, request: Request) -> Response:
        accept, accept_encoding = request.header("accept"), request.header("accept-encoding")
        query = parse_qs(request.query)
        unknown = set(query) - {"name[]"}
        if unknown:
            return Response.text(400, f"unknown query parameter(s): {', '.join(sorted(unknown))} (use name[])\n")
        if not query:
            return self.metrics_cache.get(accept, accept_encoding)
        content_type, compress = _variant(accept, accept_encoding)
        encoder, _ = choose_encoder(content_type)
        body = encoder(self.metrics.registry.restricted_registry(query["name[]"]))
        headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
        if compress:
            body = gzip.compress(body, compresslevel=1)
            headers += (("Content-Encoding", "gzip"),)
        return Response(200, headers, body)

    def _ready(self, _request: Request) -> Response:
        if self.hooks.ready():
            return Response.text(200, "Ready.\n")
        return Response.text(503, "Not ready: no sweep finished and no cached ranking yet.\n")

    def _reload(self, _request: Request) -> Response:
        error = self.hooks.reload()
        if error is None:
            return Response.text(200, "Reloaded.\n")
        return Response.text(500, f"reload failed: {error}\n")

    def _regions(self, request: Request) -> Response:
        query = parse_qs(request.query)
        unknown = set(query) - {"service", "target"}
        if unknown:
            names = ", ".join(sorted(unknown))
            return Response.text(400, f"unknown query parameter(s): {names} (use service, target)\n")
        document = regions_document(
            self.hooks.snapshots(),
            service=query.get("service", [None])[0],
            target=query.get("target", [None])[0],
        )
        body = json.dumps(document, indent=2, default=_json_default, allow_nan=False).encode() + b"\n"
        return Response(200, (("Content-Type", "application/json"),), body)

    def _index(self, _request: Request) -> Response:
        return Response(200, (("Content-Type", "text/html; charset=utf-8"),),
                        render_index(self.hooks.snapshots(), self.hooks.ready()))


def _not_allowed(path: str, allowed: Sequence[str]) -> Response:
    return Response.text(405, f"{path} takes {' or '.join(allowed)}\n", ("Allow", ", ".join(allowed)))


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def render_index(snapshots: Sequence[TargetSnapshot], ready: bool) -> bytes:
    """A small status page: links, and each target's ranking as a table."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>region-latency-exporter</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}"
        ".healthy{color:#1a7f37}.failing{color:#cf222e}.stale{color:#9a6700}.unmeasured{color:#6e7781}</style>",
        "</head><body><h1>region-latency-exporter</h1>",
        f"<p>version {html.escape(__version__)} &middot; {'ready' if ready else 'not ready yet'}</p>",
        "<p><a href='/metrics'>Metrics</a> &middot; <a href='/regions'>Regions (JSON)</a> &middot; "
        "<a href='/-/healthy'>Health</a> &middot; <a href='/-/ready'>Readiness</a></p>",
    ]
    for snap in snapshots:
        info = snap.info
        parts.append(f"<h2 id='{html.escape(info.name)}'>{html.escape(info.name)} "
                     f"<small>({html.escape(info.service)}, {html.escape(info.probe)} probe)</small></h2>")
        parts.append("<table><tr><th>Rank</th><th>Region</th><th>EMA</th><th>Samples</th><th>State</th>"
                     "<th>Last error</th></tr>")
        for entry in snap.ranking.entries:
            last = snap.last_probe.get(entry.region)
            ema = "" if entry.ema is None else f"{entry.ema * 1000:.1f} ms"
            error = "" if last is None or last.success else html.escape(f"{last.error}: {last.detail}")
            parts.append(
                f"<tr><td>{entry.rank or ''}</td><td>{html.escape(entry.region)}</td><td>{ema}</td>"
                f"<td>{entry.samples}</td><td class='{entry.state.value}'>{entry.state.value}</td>"
                f"<td>{error}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


class WebServer:
    """Serves an ExporterApp on host:port from a background thread (export/server.py)."""

    def __init__(self, app: ExporterApp, host: str, port: int) -> None:
        self._server = HttpServer(app, host, port)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
