"""No request makes the exporter contact a host that is not in its config (no SSRF), and credentials (AWS keys in the
environment, the redis password in the cache URL, basic-auth users and hashes) never appear in logs, pages,
/regions, /metrics, check-config's output or --version. Against the real process."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import bcrypt
import pytest

from tests.support.exporter import ExporterProcess, run_cli, write_config
from tests.support.servers import ServerGroup, free_port

pytestmark = pytest.mark.integration

AWS = {"AWS_ACCESS_KEY_ID": "AKIAMARKER7Q2W3E4R5T", "AWS_SECRET_ACCESS_KEY": "aws-secret-marker-0a9b8c7d",
       "AWS_SESSION_TOKEN": "aws-session-token-marker-1f2e"}
REDIS_PASSWORD = "redis-password-marker-3c4d"
USER, PASSWORD = "basic-user-marker-5e6f", "basic-password-marker-7a8b"
PATHS = ("/metrics", "/regions", "/", "/-/healthy", "/-/ready", "/-/reload", "/probe", "/status", "/nope")


def answered(port: int, request: bytes) -> bytes:
    """`raw`, or nothing while the server is not listening yet."""
    try:
        return raw(port, request)
    except ConnectionRefusedError:
        return b""


def raw(port: int, request: bytes) -> bytes:
    """One request on its own connection, everything the server sends back until it closes or 2 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(2)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return data


def hostile_requests(canary: str, authorization: str) -> list[bytes]:
    """Requests naming the canary host every way a request can name a host: query, path, absolute-form target,
    Host and forwarding headers; on every endpoint, with GET and POST."""
    out = []
    query = (f"target=http://{canary}/&url=http://{canary}/&module=http_2xx&host={canary}&endpoint=http://{canary}"
             f"&region=local-1&service=http://{canary}&name[]=http://{canary}")
    for path in PATHS:
        for method in ("GET", "POST"):
            targets = [path, f"{path}?{query}", f"http://{canary}{path}?{query}", f"{path}/http://{canary}/"]
            for target in targets:
                head = (f"{method} {target} HTTP/1.1\r\nHost: {canary}\r\nX-Forwarded-Host: {canary}\r\n"
                        f"X-Forwarded-For: {canary}\r\nForwarded: host={canary}\r\nX-Original-URL: http://{canary}/\r\n"
                        f"Referer: http://{canary}/\r\nAuthorization: {authorization}\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n")
                out.append(head.encode())
    out.append(f"CONNECT {canary} HTTP/1.1\r\nHost: {canary}\r\n\r\n".encode())
    return out


def test_no_request_reaches_a_host_outside_the_config_and_no_secret_leaks(
        tmp_path: Path, local_servers: ServerGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    configured = local_servers.tcp()
    canary = local_servers.tcp()  # in no config: must see no connection at all
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    redis_url = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens: saves fail
    config = write_config(tmp_path / "config.yaml", {"cache": {"type": "redis", "url": redis_url}, "targets": [{
        "name": "local", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
        "endpoints": {"local-1": f"http://127.0.0.1:{configured.port}"}, "interval": "1s", "timeout": "500ms"}]})
    secrets = [*AWS.values(), REDIS_PASSWORD, USER, PASSWORD, hashed]
    authorization = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    exporter = ExporterProcess(config, extra_args=["--web.config.file", str(web), "--web.enable-lifecycle",
                                                   "--log.level", "debug"])
    answers: list[bytes] = []
    try:
        exporter.wait_for(lambda: b"200 OK" in answered(exporter.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n"
                                                        b"Authorization: " + authorization.encode() + b"\r\n"
                                                        b"Connection: close\r\n\r\n"), 30, "healthy")
        exporter.wait_for(lambda: configured.accepted >= 2, 30, "probing the configured host")
        for request in hostile_requests(f"127.0.0.1:{canary.port}", authorization):
            answers.append(raw(exporter.port, request))
        time.sleep(2)  # anything the requests set off (a reload, a probe) has had its time
        log = exporter.log()
    finally:
        exporter.stop()
    assert canary.accepted == 0
    assert all(answer.startswith(b"HTTP/1.1 ") for answer in answers)
    assert any(answer.startswith(b"HTTP/1.1 200") and b"region_latency_samples" in answer for answer in answers)
    assert "could not save latency metrics to cache" in log or "redis" in log.lower()  # the password was near
    pages = b"\n".join(answers).decode("latin-1")
    check = run_cli("check-config", "--config", str(config), "--web.config.file", str(web), env=AWS)
    version = run_cli("--version", env=AWS)
    assert check.returncode == 0, check.stderr
    for secret in secrets:
        for where, text in (("log", log), ("pages", pages), ("check-config", check.stdout + check.stderr),
                            ("--version", version.stdout + version.stderr)):
            assert secret not in text, (secret, where)
