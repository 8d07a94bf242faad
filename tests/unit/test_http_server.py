"""export/server.py over real sockets: keep-alive, pipelining in order, HEAD, limits, timeouts, errors."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from region_latency.export.server import HttpServer, Request, Response


class Handler:
    """/fast is answered on the loop, /slow on a worker after `release` is set, /boom fails."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[Request] = []

    def respond_now(self, request: Request) -> Response | None:
        self.seen.append(request)
        if request.path == "/fast":
            return Response.text(200, f"fast {request.method} {request.query}\n")
        if request.path == "/boom-now":
            raise RuntimeError("boom")
        return None

    def respond(self, request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("boom")
        if request.path == "/slow":
            assert self.release.wait(10)
        return Response(200, (("Content-Type", "text/plain"),), f"{request.path} {len(request.body)}\n".encode())


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def server(handler: Handler) -> Iterator[HttpServer]:
    srv = HttpServer(handler, "127.0.0.1", 0, request_timeout=0.5, idle_timeout=5)
    srv.start()
    yield srv
    handler.release.set()
    srv.stop()


def raw(server: HttpServer, data: bytes, *, shut: bool = False, timeout: float = 5) -> bytes:
    """Send bytes, read until the server closes."""
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_serves_several_requests_on_one_connection(server: HttpServer) -> None:
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    for path in ("/fast?a=1", "/other", "/fast"):
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and response.getheader("Connection") is None
        assert response.getheader("Date") and int(response.getheader("Content-Length")) == len(body)
    assert body == b"fast GET \n"
    conn.close()


def test_http10_and_connection_close_end_the_connection(server: HttpServer) -> None:
    out = raw(server, b"GET /fast HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in out and out.endswith(b"fast GET \n")
    out = raw(server, b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in out and out.endswith(b"fast GET \n")


def test_pipelined_requests_are_answered_in_order(server: HttpServer, handler: Handler) -> None:
    threading.Timer(0.2, handler.release.set).start()
    out = raw(server, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/slow 0\n", b"fast GET \n", b"/post 5\n"]


def test_a_slow_answer_does_not_hold_up_other_connections(server: HttpServer, handler: Handler) -> None:
    slow = socket.create_connection(server.address, timeout=5)
    slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    assert raw(server, b"GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"fast GET \n")
    assert time.monotonic() - started < 2
    handler.release.set()
    assert slow.recv(65536).endswith(b"/slow 0\n")
    slow.close()


def test_head_has_the_length_but_no_body(server: HttpServer) -> None:
    out = raw(server, b"HEAD /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: 11\r\n" in out and out.endswith(b"\r\n\r\n")


def test_a_client_that_half_closes_still_gets_its_answer(server: HttpServer) -> None:
    assert raw(server, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", shut=True).endswith(b"/other 0\n")


@pytest.mark.parametrize(("data", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", b"400 Bad Request"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431 Request Header Fields Too Large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + b"a" * 70_000, b"413 Request Entity Too Large"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"400 Bad Request"),
    (b"GET /fast HTTP/1.1\r\nHost: x\r\n", b"408 Request Timeout"),  # never finished: request_timeout
])
def test_bad_requests_get_a_status_and_a_closed_connection(server: HttpServer, data: bytes, status: bytes) -> None:
    out = raw(server, data)
    assert out.startswith(b"HTTP/1.1 " + status + b"\r\n") and b"Connection: close" in out


def test_handler_errors_are_500s_and_the_server_goes_on(server: HttpServer) -> None:
    assert raw(server, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 500 ")
    assert raw(server, b"GET /boom-now HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 500 ")
    assert raw(server, b"GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"fast GET \n")


def test_idle_connections_are_closed() -> None:
    srv = HttpServer(Handler(), "127.0.0.1", 0, idle_timeout=0.3)
    srv.start()
    try:
        with socket.create_connection(srv.address, timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(10) == b""
            assert 0.2 < time.monotonic() - started < 3
    finally:
        srv.stop()


def test_port_in_use_fails_at_construction(server: HttpServer) -> None:
    with pytest.raises(OSError):
        HttpServer(Handler(), "127.0.0.1", server.address[1])


def test_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = HttpServer(Handler(), "::1", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    srv.start()
    try:
        with socket.create_connection(("::1", srv.address[1]), timeout=5) as sock:
            sock.sendall(b"GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).endswith(b"fast GET \n")
    finally:
        srv.stop()


def test_stop_closes_open_connections_and_ends_the_thread(handler: Handler) -> None:
    srv = HttpServer(handler, "127.0.0.1", 0)
    srv.start()
    sock = socket.create_connection(srv.address, timeout=5)
    sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).endswith(b"fast GET \n")  # accepted, answered, kept open
    srv.stop()
    assert sock.recv(10) == b""
    sock.close()
    assert not srv._thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(srv.address, timeout=1)


def test_http10_keep_alive_is_honoured_and_said(server: HttpServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            out = sock.recv(65536)
            assert b"Connection: keep-alive\r\n" in out and out.endswith(b"fast GET \n")
