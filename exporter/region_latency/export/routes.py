"""Request routing: which path answers what, and where (the event loop, or a worker thread).

/metrics comes from the metrics cache (export/metrics_cache.py), `/` from export/status_page.py; /regions (JSON),
health, readiness and reload are answered here. Every handler reads snapshots, so no request waits on a probe.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from region_latency._version import __version__
from region_latency.export.metrics_cache import MetricsCache, render_filtered, snapshot_generation
from region_latency.export.probe_debug import ProbeDebugger
from region_latency.export.prometheus import ExporterRegistry
from region_latency.export.server import Answer, Request, Response
from region_latency.export.status_page import ReloadState, render_index
from region_latency.recent import RecentProbes
from region_latency.state import TargetSnapshot


@dataclass(frozen=True)
class WebHooks:
    """What the web side needs from the running exporter."""

    snapshots: Callable[[], Sequence[TargetSnapshot]]
    ready: Callable[[], bool]
    # a Future of the outcome (an error message, or None on success) of a reload run on its own thread
    reload: Callable[[], Future[str | None]]
    recent: RecentProbes | None = None  # the status page's charts and recent probes
    debug_probe: ProbeDebugger | None = None  # /probe?target=..&region=..&debug=true
    reload_status: Callable[[], ReloadState] | None = None  # the status page's "config loaded ... ago"


_Route = tuple[tuple[str, ...], Callable[[Request], Answer]]
LIFECYCLE_DISABLED = Response.text(403, "Lifecycle API is not enabled.\n")


class ExporterApp:
    """Routes requests. Cheap answers (cached /metrics, health, readiness, errors) are given on the event loop;
    renders, /regions and the status page run on a worker thread; a reload on the reload thread
    (region_latency.lifecycle), waited for without holding a worker.

    `metrics_path` is `--web.telemetry-path`; `lifecycle` is `--web.enable-lifecycle` (without it, POST or PUT
    /-/reload answers 403, as Prometheus does).
    """

    def __init__(self, metrics: ExporterRegistry, hooks: WebHooks, *, metrics_max_age: float = 1.0,
                 metrics_path: str = "/metrics", lifecycle: bool = True) -> None:
        self.hooks = hooks
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.lifecycle = lifecycle
        self.metrics_cache = MetricsCache(metrics, lambda: snapshot_generation(hooks.snapshots()),
                                          max_age=metrics_max_age)
        self._now: dict[str, _Route] = {
            "/-/healthy": (("GET", "HEAD"), lambda _r: Response.text(200, "Healthy.\n")),
            "/-/ready": (("GET", "HEAD"), self._ready),
            "/-/reload": (("POST", "PUT"), self._reload),
        }
        self._later: dict[str, _Route] = {
            "/": (("GET", "HEAD"), self._index),
            "/regions": (("GET", "HEAD"), self._regions),
            "/probe": (("GET",), self._probe),
        }

    def respond_now(self, request: Request) -> Answer | None:
        path, method = request.path, request.method
        if path == self.metrics_path:
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

    def respond(self, request: Request) -> Answer:
        if request.path == self.metrics_path:
            return self._metrics(request)
        if request.path in self._now:
            return self._route(self._now[request.path], request)
        return self._route(self._later[request.path], request)

    def _route(self, route: _Route, request: Request) -> Answer:
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
        return render_filtered(self.metrics, query["name[]"], accept, accept_encoding)

    def _ready(self, _request: Request) -> Response:
        if self.hooks.ready():
            return Response.text(200, "Ready.\n")
        return Response.text(503, "Not ready: no sweep finished and no cached ranking yet.\n")

    def _reload(self, _request: Request) -> Answer:
        if not self.lifecycle:
            return LIFECYCLE_DISABLED
        outcome: Future[Response] = Future()

        def done(reloaded: Future[str | None]) -> None:
            error = reloaded.result()
            if error is None:
                outcome.set_result(Response.text(200, "Reloaded.\n"))
            else:
                outcome.set_result(Response.text(500, f"reload failed: {error}\n"))

        self.hooks.reload().add_done_callback(done)
        return outcome

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
                        render_index(self.hooks.snapshots(), self.hooks.ready(), recent=self.hooks.recent,
                                     last_reload=self.hooks.reload_status() if self.hooks.reload_status else None,
                                     metrics_path=self.metrics_path))

    def _probe(self, request: Request) -> Response:
        if self.hooks.debug_probe is None:
            return Response.text(404, "no such page: /probe (debug probes are not enabled here)\n")
        return self.hooks.debug_probe.respond(request.query)


def _not_allowed(path: str, allowed: Sequence[str]) -> Response:
    return Response.text(405, f"{path} takes {' or '.join(allowed)}\n", ("Allow", ", ".join(allowed)))


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


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON-able: {type(value).__name__}")
