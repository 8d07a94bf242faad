"""Property-based fuzz of the real HTTP server with the exporter's real routes behind the web config guard: random
methods, targets, headers and bodies, pipelined, sometimes cut short or garbled. Whatever arrives: no crash, no
hang, no unanswered well-formed request, no traceback in the log, no 500 for a client's error, and /metrics keeps
answering a new client while other connections attack."""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from region_latency.export.guard import GuardedHandler
from region_latency.export.prometheus import build_registry
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import HttpServer
from region_latency.export.webconfig import WebConfigFile
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

AUTH = "Basic " + base64.b64encode(b"prom:pw").decode()
PATHS = ["/metrics", "/regions", "/", "/-/healthy", "/-/ready", "/-/reload", "/probe", "/status", "/x", "//",
         "/metrics/", "/%2e%2e/etc/passwd", "/../../etc/passwd", "*"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PRI", "get", "BREW"]
HEADER_NAMES = ["Host", "Accept", "Accept-Encoding", "Authorization", "Content-Length", "Transfer-Encoding",
                "Expect", "Upgrade", "Connection", "Cookie", "X-Forwarded-Host", "Range", "If-None-Match"]


class Errors(logging.Handler):
    """Every record at error level or with a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, errors: Errors) -> Iterator[HttpServer]:
    state = TargetState(TargetInfo("local", "bedrock-runtime", "https"), ["r-1", "r-2"], RegionLatencyTracker(),
                        PlainRanking())
    state.record("r-1", ProbeResult(0.02, {"ttfb": 0.02}, status=403))
    state.record("r-2", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer <script>"))

    def reload() -> Future[str | None]:
        done: Future[str | None] = Future()
        done.set_result(None)
        return done

    app = ExporterApp(build_registry(lambda: [state.snapshot()]),
                      WebHooks(snapshots=lambda: [state.snapshot()], ready=lambda: True, reload=reload))
    web = Path(tmp_path_factory.mktemp("web")) / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}'\n")
    guarded = GuardedHandler(app, WebConfigFile(web))
    srv = HttpServer(guarded, "127.0.0.1", 0, request_timeout=1.0, idle_timeout=5)
    srv.start()
    yield srv
    srv.stop()


def exchange(server: HttpServer, data: bytes, *, half_close: bool = True, timeout: float = 10) -> bytes:
    """Send `data`, say we are done (half-close), read until the server closes. A hang fails the test."""
    with socket.create_connection(server.address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed: what it sent is still read below
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def statuses(out: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"(?:^|\r\n|\n)HTTP/1\.1 (\d{3}) ", out)]


def metrics_still_answer(server: HttpServer) -> None:
    out = exchange(server, f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode())
    assert statuses(out)[:1] == [200] and b"region_latency_ema_seconds" in out


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'*+^`|",
                 min_size=1, max_size=12)
_path_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?#[]", max_size=40)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@st.composite
def well_formed(draw: st.DrawFn) -> bytes:
    """A request with valid framing (whatever the method, target and header values mean)."""
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    path = draw(st.sampled_from(PATHS[:-1]))
    query = draw(st.one_of(st.just(""), _path_chars.map(lambda q: "?" + q.replace("#", "").replace("?", "&"))))
    headers = [("Host", draw(st.sampled_from(["x", "127.0.0.1:1", "evil.example", ""])))]
    if draw(st.booleans()):
        headers.append(("Authorization", draw(st.sampled_from([AUTH, "Basic !!", "Bearer x", AUTH + "x", "Basic"]))))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(["Accept", "Accept-Encoding", "Cookie", "X-Forwarded-Host", "Range"]),
                              _token))
        if name.lower() in ("content-length", "transfer-encoding", "expect", "upgrade", "connection"):
            continue
        headers.append((name, draw(_value).strip()))
    body = draw(st.binary(max_size=200))
    if body or draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {path}{query.split('#')[0]} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Anything: odd methods and targets, framing headers with bad values, raw bytes, truncation."""
    method = draw(st.one_of(st.sampled_from(METHODS), _token))
    target = draw(st.one_of(st.sampled_from(PATHS), _path_chars, st.sampled_from(
        ["http://a:99999/", "http://[::1/", "http://", "host:80", "http://127.0.0.1:1/metrics", "/\x00", "/ /"])))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "", "HTTP/0.9"]))
    lines = [f"{method} {target} {version}".rstrip()]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), _token, st.just("")))
        value = draw(st.one_of(_value, st.sampled_from(
            ["chunked", "100-continue", "h2c", "-1", "99999999999999999999", "1, 2", "websocket", "close"])))
        lines.append(f"{name}: {value}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + draw(st.binary(max_size=100))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]  # cut short
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))  # garbage after
    return data


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(requests=st.lists(well_formed(), min_size=1, max_size=5))
def test_well_formed_pipelines_get_one_answer_each_in_order_never_a_500(server: HttpServer, errors: Errors,
                                                                        requests: list[bytes]) -> None:
    out = exchange(server, b"".join(requests))
    codes = statuses(out)
    assert codes, out[:200]
    assert 500 not in codes, out[:400]
    # one answer per request, unless an answer refused the stream (a 4xx that closes: nothing after it is read)
    assert len(codes) == len(requests) or (codes[-1] in (400, 413, 417, 431) and len(codes) <= len(requests)), \
        (codes, requests)
    assert not errors.records, [r.getMessage() for r in errors.records]


@SETTINGS
@given(data=st.lists(hostile(), min_size=1, max_size=3).map(b"".join), half_close=st.booleans())
def test_hostile_bytes_never_crash_hang_500_or_log_a_traceback(server: HttpServer, errors: Errors, data: bytes,
                                                               half_close: bool) -> None:
    # without a half-close, the server must still end the exchange by itself (request timeout: 1 s)
    out = exchange(server, data, half_close=half_close)
    assert 500 not in statuses(out), out[:400]
    assert not errors.records, [r.getMessage() for r in errors.records]
    metrics_still_answer(server)


def test_metrics_keep_answering_a_new_client_during_attacks(server: HttpServer, errors: Errors) -> None:
    stop = threading.Event()

    def slowloris() -> None:
        while not stop.is_set():
            with socket.create_connection(server.address, timeout=10) as sock:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                    if stop.wait(0.05):
                        return
                    sock.sendall(bytes([byte]))

    def pipeliner() -> None:
        request = f"GET /-/healthy HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()
        while not stop.is_set():
            exchange(server, request * 2000)

    def non_reader() -> None:
        request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode()
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                while not stop.is_set():
                    sock.sendall(request * 50)
            except OSError:
                pass

    def garbage() -> None:
        while not stop.is_set():
            exchange(server, b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 20)

    attackers = [threading.Thread(target=f, daemon=True)
                 for f in (slowloris, slowloris, pipeliner, pipeliner, non_reader, garbage)]
    for thread in attackers:
        thread.start()
    try:
        for _ in range(30):
            metrics_still_answer(server)  # each on a new connection; exchange() fails on a 10 s hang
    finally:
        stop.set()
        for thread in attackers:
            thread.join(15)
    assert not errors.records, [r.getMessage() for r in errors.records]
