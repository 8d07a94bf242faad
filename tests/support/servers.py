"""Local servers for probe tests: real sockets on 127.0.0.1 (port 0), background threads, clean shutdown.

- `TcpListener`: accepts TCP connections and never answers (connect timing; "accepts, never answers"),
  or sends fixed bytes (e.g. not HTTP) and hangs up.
- `HttpServer`: HTTP/1.1, or HTTPS when given a server `ssl.SSLContext`, answering every request with a
  `Reply` (status, body, headers, a delay before the response, or never answering at all).
- `TestCA`: a throwaway CA (trustme) that issues server certificates and writes its PEM for clients.
- `fake_aws` / `aws_error`: responders that speak enough AWS JSON/REST for a signed boto3 call.
- `ServerGroup`: creates any of the above and closes them all at once (the `local_servers` fixture).

Every server closes promptly: delayed and hanging replies wait on a stop event, open connections
are shut down, and handler threads are joined.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import trustme

LOCALHOST = "127.0.0.1"


# -- what a server answers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer. `delay` (seconds) holds back the whole response; `hang` never sends it."""

    status: int = 200
    body: bytes | str = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False

    def payload(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it; header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    header_names: tuple[str, ...] = ()  # every header line's name, lower-case, in order (repeats kept)


Responder = Reply | Callable[[RecordedRequest], Reply]
"""A fixed Reply, or a function choosing one per request."""


def json_reply(document: Any, status: int = 200, **kwargs: Any) -> Reply:
    """A JSON answer with the content type botocore's JSON parsers expect."""
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": "00000000-test", **kwargs.pop("headers", {})}
    return Reply(status=status, body=json.dumps(document), headers=headers, **kwargs)


def aws_error(status: int, code: str, message: str = "test error", **kwargs: Any) -> Reply:
    """An AWS error answer readable by both rest-json (x-amzn-ErrorType) and json (__type) protocols."""
    headers = {"x-amzn-ErrorType": code, **kwargs.pop("headers", {})}
    return json_reply({"__type": code, "message": message}, status=status, headers=headers, **kwargs)


BEDROCK_ROUTES: Mapping[tuple[str, str], Reply] = {
    ("GET", "/foundation-models"): json_reply({"modelSummaries": []}),  # bedrock ListFoundationModels
    ("GET", "/async-invoke"): json_reply({"asyncInvokeSummaries": []}),  # bedrock-runtime ListAsyncInvokes
}


def fake_aws(
    routes: Mapping[tuple[str, str], Reply] = BEDROCK_ROUTES,
    default: Reply | None = None,
    delay: float = 0.0,
) -> Callable[[RecordedRequest], Reply]:
    """A responder answering (method, path-without-query) from `routes`; anything else gets `default`
    (a 404 UnknownOperationException unless given). `delay` is added to every answer."""
    fallback = default or aws_error(404, "UnknownOperationException", "no such route in the fake")

    def respond(request: RecordedRequest) -> Reply:
        reply = routes.get((request.method, request.path.split("?", 1)[0]), fallback)
        if delay:
            reply = Reply(reply.status, reply.body, reply.headers, reply.delay + delay, reply.hang)
        return reply

    return respond


# -- certificates -------------------------------------------------------------------------------------


class TestCA:
    """A throwaway certificate authority; `ca_file` is its PEM, for clients that take a CA bundle path."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path | str) -> None:
        self._ca = trustme.CA()
        self.ca_file = str(Path(directory) / f"ca-{id(self):x}.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context with a certificate for `names` (default: localhost and 127.0.0.1)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(*(names or ("localhost", LOCALHOST))).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context


# -- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _Connections:
    """Open server-side sockets, so close() can wake threads blocked on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def shutdown_all(self) -> None:
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw call: safe on SSLSockets too


class TcpListener:
    """A TCP server that accepts connections and holds them open without reading.

    By default it never sends a byte. `greeting` is sent right after accepting (e.g. bytes that are
    not HTTP), and `close_after_greeting` then hangs up.
    """

    def __init__(self, greeting: bytes = b"", *, close_after_greeting: bool = False) -> None:
        self._greeting = greeting
        self._close_after_greeting = close_after_greeting
        self._sock = socket.create_server((LOCALHOST, 0), backlog=64)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-listener-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """`tcp://127.0.0.1:<port>`."""
        return f"tcp://{LOCALHOST}:{self.port}"

    def https_url(self) -> str:
        """The same listener as an https URL: a TLS client connects, then waits forever for the handshake."""
        return f"https://{LOCALHOST}:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            with contextlib.suppress(OSError):
                if self._greeting:
                    conn.sendall(self._greeting)
                if self._close_after_greeting:
                    conn.shutdown(socket.SHUT_RDWR)
            self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()

    def __enter__(self) -> TcpListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ThreadedServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False  # joined on close: no thread outlives the server
    block_on_close = True

    def __init__(self, owner: HttpServer, host: str = LOCALHOST, port: int = 0) -> None:
        self.owner = owner
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up, failing TLS or timing out are what these tests provoke: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ThreadedServer

    def setup(self) -> None:
        owner = self.server.owner
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with owner._lock:
            owner.accepted += 1
        owner._connections.add(self.request)
        if owner.tls is not None:
            raw = self.request
            self.request = owner.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            owner._connections.discard(raw)
            owner._connections.add(self.request)
            try:
                self.request.settimeout(30)
                self.request.do_handshake()
                self.request.settimeout(None)
            except BaseException:
                self._close()  # finish() does not run when setup() fails
                raise
        super().setup()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self._close()

    def _close(self) -> None:
        """Close the socket this handler owns: for TLS that is the wrapped socket, which socketserver
        does not know about (it closes the detached raw one)."""
        self.server.owner._connections.discard(self.request)
        self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output should show test failures, not access logs."""

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            header_names=tuple(k.lower() for k in self.headers),  # Message: every name, repeats kept
        )
        reply = owner._record(request)
        if reply.hang:
            owner._stop.wait()
            self.close_connection = True
            return
        if reply.delay > 0 and owner._stop.wait(reply.delay):
            self.close_connection = True
            return
        self.wfile.write(_encode(reply, include_body=self.command != "HEAD"))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve  # noqa: N815


def _encode(reply: Reply, include_body: bool) -> bytes:
    """The whole response in one write, so it leaves in one segment (no Nagle/delayed-ACK stall)."""
    body = reply.payload()
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Status"
    headers = {"Content-Length": str(len(body)), "Connection": "keep-alive", **reply.headers}
    head = f"HTTP/1.1 {reply.status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode("latin-1") + (body if include_body else b"")


class HttpServer:
    """An HTTP/1.1 server (HTTPS when `tls` is a server SSLContext) on 127.0.0.1, one thread per connection.

    `reply` is a Reply or a function of the RecordedRequest; change it any time with `set_reply`.
    Every request is appended to `requests`. Keep-alive is supported, as boto3 pools connections.
    """

    def __init__(self, reply: Responder | None = None, *, tls: ssl.SSLContext | None = None, host: str = LOCALHOST,
                 port: int = 0) -> None:
        """`host` and `port`: where to listen (default 127.0.0.1, a free port; "::1" for IPv6 loopback)."""
        self.tls = tls
        self.requests: list[RecordedRequest] = []
        self.accepted = 0  # connections accepted (keep-alive: fewer than requests)
        self._reply: Responder = reply if reply is not None else Reply()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections = _Connections()
        self._server = _ThreadedServer(self, host, port)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        """`http(s)://127.0.0.1:<port>`."""
        return f"{self.scheme}://{LOCALHOST}:{self.port}"

    def url_for(self, host: str) -> str:
        """The server's URL under another name that resolves to 127.0.0.1 (e.g. "localhost")."""
        return f"{self.scheme}://{host}:{self.port}"

    def set_reply(self, reply: Responder) -> None:
        with self._lock:
            self._reply = reply

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._reply
        return reply(request) if callable(reply) else reply

    def drop_connections(self) -> None:
        """Close every open connection from the server's side (as a server ends idle keep-alive connections)."""
        self._connections.shutdown_all()

    def close(self) -> None:
        """Release hanging replies, stop accepting, wake blocked connections, join every thread."""
        self._stop.set()
        self._server.shutdown()
        self._connections.shutdown_all()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_S = TypeVar("_S", TcpListener, HttpServer)


class ServerGroup:
    """Creates local servers and closes all of them at once; `tmp_dir` holds CA files."""

    def __init__(self, tmp_dir: Path | str) -> None:
        self._tmp_dir = Path(tmp_dir)
        self._closers: list[Callable[[], None]] = []
        self._ca: TestCA | None = None

    @property
    def ca(self) -> TestCA:
        """The group's CA (made on first use); HTTPS servers from `https()` use it by default."""
        if self._ca is None:
            self._ca = TestCA(self._tmp_dir)
        return self._ca

    def new_ca(self) -> TestCA:
        """Another CA, e.g. to serve a certificate the client does not trust."""
        return TestCA(self._tmp_dir)

    def tcp(self, greeting: bytes = b"", *, close_after_greeting: bool = False) -> TcpListener:
        return self._keep(TcpListener(greeting, close_after_greeting=close_after_greeting))

    def http(self, reply: Responder | None = None) -> HttpServer:
        return self._keep(HttpServer(reply))

    def https(
        self, reply: Responder | None = None, *, ca: TestCA | None = None, names: tuple[str, ...] = ()
    ) -> HttpServer:
        """An HTTPS server whose certificate (for `names`, default localhost/127.0.0.1) comes from `ca`."""
        return self._keep(HttpServer(reply, tls=(ca or self.ca).server_context(*names)))

    def _keep(self, server: _S) -> _S:
        self._closers.append(server.close)
        return server

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
