"""Basic auth, rate limit and extra headers from the web config file, in front of every route.

A wrapper around the routes' handler, so the routes know nothing of it and the server nothing of auth. What can
be decided on the event loop is (a cached bcrypt verdict, a missing or malformed header, the rate limit); a first
bcrypt check goes to a worker thread with the request, so a scrape never waits on another client's bcrypt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from region_latency.export.server import Answer, Handler, Request, Response, then
from region_latency.export.webconfig import WebConfigFile, WebSettings, client_san_allowed

UNAUTHORIZED = Response.text(401, "Unauthorized\n", ("WWW-Authenticate", 'Basic realm="region-latency-exporter"'))
TOO_MANY = Response.text(429, "Too Many Requests\n")
BROKEN_CONFIG = Response.text(500, "Internal Server Error\n")


class GuardedHandler:
    """`inner` behind the web config's basic auth, rate limit and headers (exporter-toolkit's order)."""

    def __init__(self, inner: Handler, web: WebConfigFile) -> None:
        self.inner = inner
        self.web = web

    def respond_now(self, request: Request) -> Answer | None:
        settings = self.web.current()
        if settings is None:
            return BROKEN_CONFIG
        if settings.limiter is not None and not settings.limiter.allow():
            return _with_headers(TOO_MANY, settings)
        verdict = settings.auth.cached(request.header("authorization"))
        if verdict is None:
            return None  # bcrypt on a worker: respond() checks, then answers
        if not verdict:
            return _with_headers(UNAUTHORIZED, settings)
        answer = self.inner.respond_now(request)
        return None if answer is None else then(answer, lambda response: _with_headers(response, settings))

    def respond(self, request: Request) -> Answer:
        settings = self.web.current()
        if settings is None:
            return BROKEN_CONFIG
        if not settings.auth.check(request.header("authorization")):
            return _with_headers(UNAUTHORIZED, settings)
        answer = self.inner.respond_now(request)
        if answer is None:
            answer = self.inner.respond(request)
        return then(answer, lambda response: _with_headers(response, settings))

    def accept_peer(self, peercert: Mapping[str, Any] | None) -> bool:
        """client_allowed_sans: a verified client certificate must carry one of the listed SANs."""
        settings = self.web.current()
        if settings is None:
            return True  # its requests are answered 500 until the file is fixed
        allowed = settings.config.tls_server_config.client_allowed_sans
        return allowed is None or client_san_allowed(peercert, allowed)


def _with_headers(response: Response, settings: WebSettings) -> Response:
    if not settings.headers:
        return response
    names = {name.lower() for name, _ in settings.headers}
    kept = tuple(h for h in response.headers if h[0].lower() not in names)
    return Response(response.status, kept + settings.headers, response.body)
