"""TLS, client certificates and basic auth on the real server, with a real TLS client (trustme certificates)."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import trustme

from region_latency.export import webconfig
from region_latency.export.guard import GuardedHandler
from region_latency.export.server import HttpServer, Request, Response
from region_latency.export.webconfig import WebConfigFile

PASSWORD_HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


class Routes:
    def respond_now(self, request: Request) -> Response | None:
        if request.path == "/metrics":
            return Response.text(200, "metrics\n")
        return None

    def respond(self, request: Request) -> Response:
        return Response.text(200, f"worker {request.path}\n")


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_dir(tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA) -> Path:
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    return tmp_path


Serve = Callable[[str], HttpServer]


@pytest.fixture
def serve(tls_dir: Path) -> Iterator[Serve]:
    servers: list[HttpServer] = []

    def start(web_yaml: str) -> HttpServer:
        path = tls_dir / "web.yml"
        path.write_text(web_yaml)
        web = WebConfigFile(path)
        guard = GuardedHandler(Routes(), web)
        srv = HttpServer(guard, "127.0.0.1", 0, ssl_context=web.server_context(), accept_peer=guard.accept_peer,
                         request_timeout=2)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def get(srv: HttpServer, context: ssl.SSLContext | None, path: str = "/metrics",
        headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    host, port = srv.address
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
USERS = f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"


def test_tls_with_basic_auth(serve: Serve, ca: trustme.CA) -> None:
    srv = serve(TLS + USERS)
    context = client_context(ca)
    assert get(srv, context, headers=auth("prometheus", "s3cret")).status == 200
    assert get(srv, context, "/other", headers=auth("prometheus", "s3cret")).status == 200
    wrong = get(srv, context, headers=auth("prometheus", "nope"))
    assert wrong.status == 401 and wrong.getheader("WWW-Authenticate", "").startswith("Basic")
    assert get(srv, context, headers=auth("someone", "s3cret")).status == 401
    assert get(srv, context).status == 401


def test_plain_http_to_the_tls_port_fails_cleanly(serve: Serve, ca: trustme.CA,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    srv = serve(TLS)
    with socket.create_connection(srv.address, timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
    assert b"metrics" not in data
    time.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert get(srv, client_context(ca)).status == 200  # and the server goes on


def test_a_required_client_certificate_is_checked(serve: Serve, ca: trustme.CA, client_ca: trustme.CA) -> None:
    srv = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n")
    good = client_ca.issue_cert("scraper@example.com")
    assert get(srv, client_context(ca, good)).status == 200
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        get(srv, client_context(ca))  # no certificate
    stranger = trustme.CA().issue_cert("scraper@example.com")
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        get(srv, client_context(ca, stranger))  # a certificate from another CA


def test_client_allowed_sans(serve: Serve, ca: trustme.CA, client_ca: trustme.CA) -> None:
    srv = serve(TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
                      "  client_allowed_sans: [prometheus.monitoring.svc]\n")
    assert get(srv, client_context(ca, client_ca.issue_cert("prometheus.monitoring.svc"))).status == 200
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        get(srv, client_context(ca, client_ca.issue_cert("intruder.example")))


def test_headers_from_the_web_config(serve: Serve, ca: trustme.CA) -> None:
    srv = serve(TLS + "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                      "    Strict-Transport-Security: max-age=31536000\n")
    response = get(srv, client_context(ca))
    assert response.getheader("X-Frame-Options") == "deny"
    assert response.getheader("Strict-Transport-Security") == "max-age=31536000"


def test_rate_limit(serve: Serve, ca: trustme.CA) -> None:
    srv = serve(TLS + "rate_limit:\n  interval: 1h\n  burst: 2\n")
    context = client_context(ca)
    assert [get(srv, context).status for _ in range(3)] == [200, 200, 429]


def test_basic_auth_without_tls_and_a_broken_file_fails_closed(serve: Serve, tls_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webconfig, "RECHECK_SECONDS", 0.0)
    srv = serve(USERS)
    assert get(srv, None, headers=auth("prometheus", "s3cret")).status == 200
    (tls_dir / "web.yml").write_text("basic_auth_users: [not, a, mapping]\n")
    os.utime(tls_dir / "web.yml", ns=(1, 1))
    assert get(srv, None, headers=auth("prometheus", "s3cret")).status == 500
    (tls_dir / "web.yml").write_text(USERS)
    assert get(srv, None, headers=auth("prometheus", "s3cret")).status == 200


def test_a_scrape_pays_bcrypt_once(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", lambda p, h: calls.append(1) or real(p, h))
    srv = serve(USERS)
    for _ in range(20):
        assert get(srv, None, headers=auth("prometheus", "s3cret")).status == 200
    assert len(calls) == 1
