"""`serve --web.config.file`: the real exporter process behind TLS, client certificates and basic auth, checked with
real TLS clients (httpx, a raw socket) and a real Prometheus scraping it over TLS with basic_auth."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from tests.support.exporter import ExporterProcess, write_config
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.servers import ServerGroup

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "scrape-pass-5d1e"
ENDPOINTS = ("/metrics", "/-/healthy", "/-/ready", "/regions", "/")


class Tls:
    """Server and client certificates for one test: a server CA, a client CA, and a client CA nobody trusts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
        server = server_ca.issue_cert("localhost", "127.0.0.1")
        server.private_key_pem.write_to_path(str(directory / "server.key"))
        server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
        server_ca.cert_pem.write_to_path(str(directory / "server-ca.crt"))
        client_ca.cert_pem.write_to_path(str(directory / "client-ca.crt"))
        for name, ca in (("client", client_ca), ("stranger", stranger_ca)):
            cert = ca.issue_cert(f"{name}.example")
            cert.private_key_pem.write_to_path(str(directory / f"{name}.key"))
            cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}.crt"))

    def context(self, client: str | None = "client") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.dir / "server-ca.crt"))
        if client is not None:
            context.load_cert_chain(str(self.dir / f"{client}.crt"), str(self.dir / f"{client}.key"))
        return context


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path)


@pytest.fixture
def secured(tmp_path: Path, tls: Tls, local_servers: ServerGroup) -> Iterator[ExporterProcess]:
    listener = local_servers.tcp()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n"
        "  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    config = write_config(tmp_path / "config.yaml", {"cache": "none", "targets": [{
        "name": "local", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
        "endpoints": {"local-1": f"http://127.0.0.1:{listener.port}"}, "interval": "1s", "timeout": "500ms"}]})
    exporter = ExporterProcess(config, extra_args=["--web.config.file", str(web), "--log.format", "logfmt"])
    try:
        with httpx.Client(verify=tls.context(), timeout=10) as client:
            url = f"https://127.0.0.1:{exporter.port}/-/healthy"
            exporter.wait_for(lambda: client.get(url, auth=(USER, PASSWORD)).status_code == 200, 30, "healthy")
        yield exporter
    finally:
        exporter.stop()


def get(exporter: ExporterProcess, tls: Tls, path: str, client: str | None = "client", **kwargs: Any) -> httpx.Response:
    with httpx.Client(verify=tls.context(client), timeout=10) as http:
        return http.get(f"https://127.0.0.1:{exporter.port}{path}", **kwargs)


def test_right_password_200_wrong_or_none_401_on_every_endpoint(secured: ExporterProcess, tls: Tls) -> None:
    for path in ENDPOINTS:
        ok = get(secured, tls, path, auth=(USER, PASSWORD))
        assert ok.status_code in (200, 503) if path == "/-/ready" else ok.status_code == 200, (path, ok.text)
        assert ok.headers["X-Content-Type-Options"] == "nosniff"
        for auth in ((USER, "wrong"), ("someone", PASSWORD), None):
            refused = get(secured, tls, path, auth=auth)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["WWW-Authenticate"].startswith("Basic ")
            assert b"region_latency" not in refused.content
    reload = httpx.Client(verify=tls.context(), timeout=10).post(
        f"https://127.0.0.1:{secured.port}/-/reload", auth=(USER, PASSWORD))
    assert (reload.status_code, reload.text) == (403, "Lifecycle API is not enabled.\n")
    assert "region_latency_config_last_reload_successful 1.0" in get(secured, tls, "/metrics",
                                                                      auth=(USER, PASSWORD)).text
    assert "config: last (re)load succeeded" in get(secured, tls, "/", auth=(USER, PASSWORD)).text


def test_a_client_certificate_is_required_and_checked(secured: ExporterProcess, tls: Tls) -> None:
    for client in (None, "stranger"):  # none, or one from a CA the web config does not name
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            get(secured, tls, "/metrics", client=client, auth=(USER, PASSWORD))
    assert get(secured, tls, "/metrics", auth=(USER, PASSWORD)).status_code == 200  # still serving


def test_plain_http_to_the_tls_port_fails_cleanly(secured: ExporterProcess, tls: Tls) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", secured.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < 5  # closed at once, not held until a timeout
    assert b"region_latency" not in received and not received.startswith(b"HTTP/1.1 200")
    assert get(secured, tls, "/metrics", auth=(USER, PASSWORD)).status_code == 200
    log = secured.log()
    assert "Traceback" not in log
    (start,) = [line for line in log.splitlines() if 'msg="starting region-latency-exporter' in line]
    assert " tls=on " in start and f"address=https://127.0.0.1:{secured.port}/metrics" in start
    assert " basic_auth=on " in start and " lifecycle=off " in start
    assert 'targets="local (bedrock-runtime via tcp, 1 regions)"' in start


@pytest.mark.skipif(prometheus_binary() is None, reason="prometheus is not installed (./test.sh installs it)")
def test_prometheus_scrapes_it_over_tls_with_basic_auth(secured: ExporterProcess, tls: Tls, tmp_path: Path) -> None:
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{secured.port}"], scrape={
        "scheme": "https",
        "tls_config": {"ca_file": str(tls.dir / "server-ca.crt"), "cert_file": str(tls.dir / "client.crt"),
                       "key_file": str(tls.dir / "client.key")},
        "basic_auth": {"username": USER, "password": PASSWORD},
    })
    try:
        prometheus.wait_for('up{job="region-latency"} == 1')
        prometheus.wait_for('region_latency_samples{target="local",region="local-1"} > 0')
        prometheus.wait_for("region_latency_config_last_reload_successful == 1")
    finally:
        prometheus.stop()
