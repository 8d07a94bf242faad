"""botocore's before-send -> before-parse window: the network part of one attempt of an API call.

botocore signs the request, emits `before-send`, sends it and reads the response (the body too, for
non-streaming operations), then emits `before-parse` and parses. Both events fire on the calling
thread, one pair per attempt, so pairing them per thread is exact even when many threads share a
client. An attempt whose send fails emits `response-received` with the exception instead.

Shared by the `api` probe and passive instrumentation (`region_latency.passive`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from region_latency.probes.base import ErrorKind, describe, short_detail

if TYPE_CHECKING:  # botocore is imported by the code that uses a client; importing this module does not
    from botocore import exceptions as bce

OnResponse = Callable[[float, int, str], None]
"""Called with (seconds, HTTP status, operation name) when an attempt got an HTTP response."""
OnFailure = Callable[[BaseException], None]
"""Called with the exception when an attempt was sent but got no HTTP response."""


class RoundTripTimer:
    """Times each attempt's before-send -> before-parse window on a client's event system.

    Handlers return None, so the call's behaviour and result are unchanged. The callbacks run on the
    calling thread, inside botocore's event dispatch: they must be quick and must not raise.
    """

    def __init__(self, on_response: OnResponse, on_failure: OnFailure) -> None:
        self._on_response = on_response
        self._on_failure = on_failure
        self._local = threading.local()
        prefix = f"region-latency-{id(self):x}"
        self._ids = {event: f"{prefix}-{event}" for event in ("before-send", "before-parse", "response-received")}

    def attach(self, events: Any) -> None:
        """Register on `client.meta.events`. The start is stamped after other before-send handlers, the
        end before other before-parse handlers, so their work stays out of the window."""
        events.register_last("before-send", self._before_send, unique_id=self._ids["before-send"])
        events.register_first("before-parse", self._before_parse, unique_id=self._ids["before-parse"])
        events.register("response-received", self._response_received, unique_id=self._ids["response-received"])

    def detach(self, events: Any) -> None:
        for event, unique_id in self._ids.items():
            events.unregister(event, unique_id=unique_id)

    def _before_send(self, **kwargs: Any) -> None:
        self._local.started = time.perf_counter()

    def _before_parse(self, response_dict: Any = None, operation_model: Any = None, **kwargs: Any) -> None:
        ended = time.perf_counter()
        started = self._take_start()
        if started is None:
            return
        status = int((response_dict or {}).get("status_code") or 0)
        operation = getattr(operation_model, "name", "") or ""
        self._on_response(ended - started, status, operation)

    def _response_received(self, exception: BaseException | None = None, **kwargs: Any) -> None:
        if exception is not None and self._take_start() is not None:
            self._on_failure(exception)

    def _take_start(self) -> float | None:
        started = getattr(self._local, "started", None)
        self._local.started = None
        return started


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """The ErrorKind and a short detail for an exception raised by a botocore call."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.CredentialRetrievalError):
        return ErrorKind.CREDENTIALS, describe(exc)
    if isinstance(exc, bce.ConnectTimeoutError | bce.ReadTimeoutError):
        return ErrorKind.TIMEOUT, describe(exc)
    if isinstance(exc, bce.SSLError):
        return ErrorKind.TLS, describe(exc)
    if isinstance(exc, bce.EndpointConnectionError):
        root = _chain(exc.kwargs.get("error") or exc)[-1]
        url = exc.kwargs.get("endpoint_url")
        return _connection_kind(exc), short_detail(f"cannot connect to {url}: {describe(root)}")
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
        return ErrorKind.CONNECTION, describe(exc)
    return ErrorKind.OTHER, describe(exc)


def _connection_kind(exc: bce.EndpointConnectionError) -> ErrorKind:
    """EndpointConnectionError covers DNS failures and refused connects alike: look at the cause chain."""
    for cause in _chain(exc.kwargs.get("error") or exc):
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return ErrorKind.DNS
        if isinstance(cause, ConnectionRefusedError | ConnectionResetError):
            return ErrorKind.REFUSED
        if isinstance(cause, TimeoutError):
            return ErrorKind.TIMEOUT
    text = str(exc).lower()
    if "connection refused" in text:
        return ErrorKind.REFUSED
    if "resolve" in text or "name or service not known" in text:
        return ErrorKind.DNS
    return ErrorKind.CONNECTION


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def error_code(response: Any) -> str:
    """The AWS error code of a ClientError's response (e.g. AccessDeniedException), short."""
    error = (response or {}).get("Error") or {}
    return short_detail(error.get("Code") or "error response", 80)
