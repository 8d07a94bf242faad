"""HTTPS and HTTP servers for the simulated regions, answering like an unauthenticated AWS endpoint.

Every request gets a quick `403` with a small AWS-style JSON error (what a real regional endpoint returns to a
request without valid credentials), after the region's optional fixed `server_delay`. asyncio serves all regions
on one loop, so TLS handshakes of many concurrent probes proceed together instead of queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024

_REASONS = {400: "Bad Request", 403: "Forbidden", 413: "Payload Too Large"}


@dataclass(slots=True)
class RegionState:
    """What one region's servers need at request time; `server_delay` may change while they run."""

    name: str
    server_delay: float = 0.0
    connections: int = 0
    requests: int = 0
    ports: dict[str, int] = field(default_factory=dict)


def server_ssl_context(server_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(server_file))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def aws_error(region: str, authorized: bool) -> tuple[bytes, str]:
    """The body and `x-amzn-ErrorType` AWS sends to a request without (valid) credentials."""
    if authorized:
        kind, message = "UnrecognizedClientException", "The security token included in the request is invalid."
    else:
        kind, message = "MissingAuthenticationTokenException", "Missing Authentication Token"
    body = json.dumps({"__type": kind, "message": message, "region": region}).encode()
    return body, kind


def render_response(region: str, status: int, body: bytes, error_type: str, *, keep_alive: bool,
                    head_only: bool = False) -> bytes:
    headers = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/x-amz-json-1.1",
        f"Content-Length: {len(body)}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"x-amzn-RequestId: {uuid.uuid4()}",
        f"x-amzn-ErrorType: {error_type}",
        f"x-sim-region: {region}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Consume the request body (Content-Length or chunked) so the next request on the connection parses."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > MAX_BODY:
                raise ValueError("body too large")
            await reader.readexactly(size + 2)
            if size == 0:
                return
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise ValueError("body too large")
    if length:
        await reader.readexactly(length)


async def handle_connection(state: RegionState, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """Serve HTTP/1.1 requests on one connection (keep-alive) until the client closes or asks to."""
    state.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(render_response(state.name, 400, b"", "BadRequest", keep_alive=False))
                await writer.drain()
                return
            method, _target, version = parts
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            await _read_body(reader, headers)
            state.requests += 1
            if state.server_delay > 0:
                await asyncio.sleep(state.server_delay)
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
            body, error_type = aws_error(state.name, "authorization" in headers)
            writer.write(render_response(state.name, 403, body, error_type, keep_alive=keep_alive,
                                         head_only=method == "HEAD"))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, ssl.SSLError, asyncio.LimitOverrunError, ValueError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_region_servers(state: RegionState, host: str, ssl_ctx: ssl.SSLContext, *, https_port: int = 443,
                               http_port: int = 80) -> list[asyncio.Server]:
    """Listen for HTTPS and plain HTTP on HOST (port 0 = any free port); records the ports in `state.ports`."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancellation only comes at shutdown; letting it escape makes 3.11's streams log a traceback per client.
        with contextlib.suppress(asyncio.CancelledError):
            await handle_connection(state, reader, writer)

    servers = [
        await asyncio.start_server(on_connect, host, https_port, ssl=ssl_ctx, ssl_handshake_timeout=10,
                                   backlog=1024, limit=MAX_HEAD, reuse_address=True),
        await asyncio.start_server(on_connect, host, http_port, backlog=1024, limit=MAX_HEAD,
                                   reuse_address=True),
    ]
    state.ports = {"https": servers[0].sockets[0].getsockname()[1], "http": servers[1].sockets[0].getsockname()[1]}
    return servers
