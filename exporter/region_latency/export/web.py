"""The HTTP side: /metrics, /regions (JSON), health and readiness, reload, and a small status page.

A plain WSGI app served by a threading wsgiref server, as prometheus_client itself does; every
handler reads snapshots only, so no request waits on a probe.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted

from region_latency import __version__
from region_latency.state import TargetSnapshot

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


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
    generation: Hashable
    rendered_at: float
    headers: tuple[tuple[str, str], ...]
    body: bytes


class MetricsCache:
    """/metrics bytes rendered once per snapshot generation, shared by every scrape until the next one.

    Rendering 35 regions x 2 probe kinds is ~30 ms of GIL-holding Python (prometheus_client's label escaping
    ~24 ms, gzip -9 ~4 ms, our collector ~4 ms; bench/BENCHMARKS.md, scrape cost). Scrapes that arrive together
    (an HA Prometheus pair, several scrapers) would otherwise each pay it, one after another. A render happens
    under a lock, so concurrent scrapes of a stale entry wait for one render instead of doing it N times.
    `max_age` bounds how old the process_*/python_gc_* values of a cached answer can be: they change without a
    new generation.
    """

    def __init__(self, registry: CollectorRegistry, generation: Callable[[], Hashable], *, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._generation = generation
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], _Rendered] = {}
        self.renders = 0  # how many times the registry was rendered (tests, debugging)

    def get(self, accept: str | None, accept_encoding: str | None) -> tuple[list[tuple[str, str]], bytes]:
        """(headers, body) for a scrape with these Accept/Accept-Encoding headers, as prometheus_client makes them."""
        encoder, content_type = choose_encoder(_prefer_text(accept or ""))
        compress = gzip_accepted(accept_encoding or "")
        variant = (content_type, compress)
        with self._lock:
            generation = self._generation()
            now = self._clock()
            entry = self._entries.get(variant)
            if entry is None or entry.generation != generation or now - entry.rendered_at > self.max_age:
                body = encoder(self._registry)
                headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
                if compress:
                    body = gzip.compress(body, compresslevel=6)  # 2.5x faster than 9, 10 % larger
                    headers += (("Content-Encoding", "gzip"),)
                entry = _Rendered(generation, now, headers, body)
                self._entries[variant] = entry
                self.renders += 1
        return list(entry.headers), entry.body


def _prefer_text(accept: str) -> str:
    """Serve the classic text format whenever the scraper accepts it, even when it prefers OpenMetrics.

    Nothing here needs OpenMetrics (no exemplars, no created timestamps), and prometheus_client renders
    text in ~60 % of the time (18 vs 30 ms for 35 regions x 2 kinds: its OpenMetrics path checks every
    label name character by character). Prometheus lists text/plain;version=0.0.4 in its Accept header.
    """
    offers = [part.split(";")[0].strip() for part in accept.split(",")]
    return "text/plain" if "text/plain" in offers else accept


def snapshot_generation(snapshots: Sequence[TargetSnapshot]) -> Hashable:
    """Changes whenever anything /metrics shows of the targets may have changed (results, re-ranking, reload)."""
    return tuple((snap.info, snap.regions, snap.generation) for snap in snapshots)


class ExporterApp:
    """Routes requests; /metrics GETs come from a MetricsCache, anything else there from prometheus_client's own
    WSGI app (name[] filters, OPTIONS, 405s)."""

    def __init__(self, registry: CollectorRegistry, hooks: WebHooks, *, metrics_max_age: float = 1.0) -> None:
        self.hooks = hooks
        self.metrics_app = make_wsgi_app(registry)
        self.metrics_cache = MetricsCache(registry, lambda: snapshot_generation(hooks.snapshots()),
                                          max_age=metrics_max_age)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            if method != "GET" or environ.get("QUERY_STRING"):
                return self.metrics_app(environ, start_response)
            headers, body = self.metrics_cache.get(environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"))
            start_response("200 OK", headers)
            return [body]
        routes: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], tuple[str, str, bytes]]]] = {
            "/": (("GET", "HEAD"), self._index),
            "/regions": (("GET", "HEAD"), self._regions),
            "/-/healthy": (("GET", "HEAD"), lambda _e: ("200 OK", "text/plain", b"Healthy.\n")),
            "/-/ready": (("GET", "HEAD"), self._ready),
            "/-/reload": (("POST", "PUT"), self._reload),
        }
        if path not in routes:
            return _respond(start_response, "404 Not Found", "text/plain", f"no such page: {path}\n".encode())
        allowed, handler = routes[path]
        if method not in allowed:
            body = f"{path} takes {' or '.join(allowed)}\n".encode()
            return _respond(start_response, "405 Method Not Allowed", "text/plain", body,
                            [("Allow", ", ".join(allowed))])
        status, content_type, body = handler(environ)
        if method == "HEAD":
            body = b""
        return _respond(start_response, status, content_type, body)

    def _ready(self, _environ: dict[str, Any]) -> tuple[str, str, bytes]:
        if self.hooks.ready():
            return "200 OK", "text/plain", b"Ready.\n"
        return "503 Service Unavailable", "text/plain", b"Not ready: no sweep finished and no cached ranking yet.\n"

    def _reload(self, _environ: dict[str, Any]) -> tuple[str, str, bytes]:
        error = self.hooks.reload()
        if error is None:
            return "200 OK", "text/plain", b"Reloaded.\n"
        return "500 Internal Server Error", "text/plain", f"reload failed: {error}\n".encode()

    def _regions(self, environ: dict[str, Any]) -> tuple[str, str, bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        unknown = set(query) - {"service", "target"}
        if unknown:
            message = f"unknown query parameter(s): {', '.join(sorted(unknown))} (use service, target)\n"
            return "400 Bad Request", "text/plain", message.encode()
        document = regions_document(
            self.hooks.snapshots(),
            service=query.get("service", [None])[0],
            target=query.get("target", [None])[0],
        )
        body = json.dumps(document, indent=2, default=_json_default, allow_nan=False).encode() + b"\n"
        return "200 OK", "application/json", body

    def _index(self, _environ: dict[str, Any]) -> tuple[str, str, bytes]:
        return "200 OK", "text/html; charset=utf-8", render_index(self.hooks.snapshots(), self.hooks.ready())


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _respond(start_response: StartResponse, status: str, content_type: str, body: bytes,
             extra_headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers + (extra_headers or []))
    return [body]


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


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of scrapes overflows it, and a dropped SYN is retried
    # after 1, 3, 7... s (50 concurrent scrapers saw p99 of tens of seconds). The kernel caps it at somaxconn.
    request_queue_size = socket.SOMAXCONN


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class WebServer:
    """Serves an ExporterApp on host:port from a background thread."""

    def __init__(self, app: ExporterApp, host: str, port: int) -> None:
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
