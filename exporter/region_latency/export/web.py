"""The web side as the application wires it: an ExporterApp (export/routes.py) served by the HTTP server
(export/server.py) on a background thread.

The rooms behind it: export/routes.py (routing, /regions, health, readiness, reload), export/metrics_cache.py
(/metrics answers rendered once per change), export/status_page.py (the HTML page at `/`).
"""

from __future__ import annotations

from region_latency.export.guard import GuardedHandler
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import Handler, HttpServer
from region_latency.export.webconfig import WebConfigFile

__all__ = ["ExporterApp", "WebHooks", "WebServer"]


class WebServer:
    """Serves an ExporterApp on host:port from a background thread (export/server.py); with a web config file
    (`--web.config.file`), behind its TLS, basic auth, rate limit and headers (export/guard.py) on every path."""

    def __init__(self, app: ExporterApp, host: str, port: int, *, web_config: WebConfigFile | None = None) -> None:
        self.web_config = web_config
        if web_config is None:
            self._server = HttpServer(app, host, port)
            return
        guarded = GuardedHandler(app, web_config)
        handler: Handler = guarded
        self._server = HttpServer(handler, host, port, ssl_context=web_config.server_context(),
                                  accept_peer=guarded.accept_peer)

    @property
    def tls(self) -> bool:
        return self.web_config is not None and self.web_config.tls

    @property
    def basic_auth(self) -> bool:
        settings = self.web_config.current() if self.web_config is not None else None
        return settings is not None and settings.auth.enabled

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
