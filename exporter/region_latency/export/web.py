"""The web side as the application wires it: an ExporterApp (export/routes.py) served by the HTTP server
(export/server.py) on a background thread.

The rooms behind it: export/routes.py (routing, /regions, health, readiness, reload), export/metrics_cache.py
(/metrics answers rendered once per change), export/status_page.py (the HTML page at `/`).
"""

from __future__ import annotations

from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import HttpServer

__all__ = ["ExporterApp", "WebHooks", "WebServer"]


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
