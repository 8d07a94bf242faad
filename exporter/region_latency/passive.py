"""Passive measurement: an application's own boto3 client feeds the tracker with every real call.

    client = boto3.client("bedrock-runtime", region_name="us-west-2")
    with instrument(client, tracker):
        client.converse(...)          # its network round trip updates tracker["us-west-2"]

Each attempt is timed from botocore's `before-send` to `before-parse` (the same window as the `api`
probe): signing, retries' back-off sleeps and response parsing stay out. Any HTTP answer, error
statuses included, is a round trip and updates the EMA; an attempt that got no answer (refused,
timed out, TLS failure) is counted with `tracker.record_failure`. The handlers return None, so the
call's behaviour and result are unchanged, and they never raise into the application.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from region_latency.probes._roundtrip import RoundTripTimer, classify

log = logging.getLogger(__name__)


class LatencySink(Protocol):
    """The part of RegionLatencyTracker that passive measurement uses."""

    def update_latency(self, region: str, latency: float) -> None: ...

    def record_failure(self, region: str, error: str = "unknown") -> None: ...


class Handle:
    """An active instrumentation; `detach()` (or leaving its `with` block) stops it. Detaching twice is fine."""

    def __init__(self, client: Any, tracker: LatencySink, region: str) -> None:
        self.client = client
        self.tracker = tracker
        self.region = region
        self._lock = threading.Lock()
        self._timer: RoundTripTimer | None = RoundTripTimer(self._on_response, self._on_failure)
        self._timer.attach(client.meta.events)

    @property
    def attached(self) -> bool:
        return self._timer is not None

    def detach(self) -> None:
        """Stop measuring this client; calls already in flight may still report once."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.detach(self.client.meta.events)

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def _on_response(self, seconds: float, status: int, operation: str) -> None:
        try:
            self.tracker.update_latency(self.region, seconds)
        except Exception:  # the application's call must not fail because of measurement
            log.warning("passive latency update for %s failed", self.region, exc_info=True)

    def _on_failure(self, exc: BaseException) -> None:
        kind, _ = classify(exc)
        try:
            self.tracker.record_failure(self.region, str(kind))
        except Exception:
            log.warning("passive failure record for %s failed", self.region, exc_info=True)


def instrument(client: Any, tracker: LatencySink, *, region: str | None = None) -> Handle:
    """Measure every API call `client` makes into `tracker`, under the client's region (or `region`).

    Thread-safe for clients shared between threads: start and end are paired per thread, and botocore
    runs each attempt's send and receive on the calling thread.
    """
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None or not hasattr(events, "register_first"):
        raise TypeError(f"instrument() needs a boto3/botocore client, got {type(client).__name__}")
    name = region if region is not None else client.meta.region_name
    if not isinstance(name, str) or not name:
        raise ValueError("the client has no region; pass region=... to instrument()")
    return Handle(client, tracker, name)
