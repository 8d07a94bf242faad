"""`/probe?target=NAME&region=R&debug=true`: run one probe of a configured region now and show its steps.

Like blackbox_exporter's `debug=true` output: a log of the probe's steps (target, resolved address, TCP connect,
TLS handshake and version, HTTP status, timings) in logfmt, then the phase timings. Only what the configuration
names can be probed: the target and region are looked up among the configured ones (400 for a malformed query,
404 for a name that is not configured), the URL is the configured one and never comes from the request, so the
page cannot be turned against another host (no SSRF).

It must not be a way to flood a region or starve the exporter: debug probes run on a pool of their own
(`max_concurrent` threads, default 2; a request beyond that gets 429 at once rather than waiting), each
(target, region) at most once per `region_interval` seconds (default 2 s), and all of them together at most
`burst` at once then one per `1/rate` seconds (defaults 5 and 1/s); a refused request gets 429 with Retry-After.
The result is shown, never recorded: the EMA, the ranking and /metrics do not see debug probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from region_latency.export.server import Response
from region_latency.probes import get_probe
from region_latency.probes.base import ProbeFn, ProbeResult, Target, parse_endpoint
from region_latency.targets import ResolvedConfig

QUERY_KEYS = ("target", "region", "debug")
USAGE = ("use /probe?target=NAME&region=REGION&debug=true (a configured target, NAME@ipv4 or NAME@ipv6 for one family "
         "of a target with ip_families, and one of its regions)")


@dataclass(frozen=True, slots=True)
class DebugTarget:
    """What one debug probe runs: the configured Target, its kind's probe and the configured timeout."""

    name: str
    kind: str
    target: Target
    probe: ProbeFn
    timeout: float


class ProbeDebugger:
    """Runs debug probes of configured regions, bounded in concurrency and rate, and renders their log."""

    def __init__(self, configured: Callable[[], ResolvedConfig], *, max_concurrent: int = 2,
                 region_interval: float = 2.0, rate: float = 1.0, burst: int = 5,
                 thread_setup: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`configured` returns the running configuration (read per request, so a reload applies at once);
        `thread_setup` runs in each debug probe thread first, as in the scheduler's (the demo enters a netns)."""
        self._configured = configured
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="probe-debug",
                                        initializer=thread_setup)
        self._region_interval = region_interval
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled = clock()
        self._last_run: dict[tuple[str, str], float] = {}
        self._clock = clock
        self._lock = threading.Lock()

    # -- the request ------------------------------------------------------------------------------------

    def respond(self, query: str) -> Response:
        """The answer to `/probe?<query>`: the debug log (200), or a one-line refusal (400, 404, 429)."""
        parsed = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(parsed) - set(QUERY_KEYS))
        if unknown:
            return _refuse(400, f"unknown query parameter(s): {', '.join(map(_show, unknown))}; {USAGE}")
        repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
        if repeated:
            return _refuse(400, f"give each parameter once (repeated: {', '.join(repeated)}); {USAGE}")
        values = {key: parsed[key][0] for key in parsed}
        if values.get("debug", "").lower() != "true":
            return _refuse(400, f"only the debug view is served here: add debug=true; {USAGE}")
        name, region = values.get("target", ""), values.get("region", "")
        if not name or not region:
            return _refuse(400, f"missing target or region; {USAGE}")
        found = self.lookup(name, region)
        if isinstance(found, str):
            return _refuse(404, found)
        wait = self._admit(name, region)
        if wait is not None:
            return _refuse(429, f"too many debug probes: try again in {wait:.0f}s "
                                "(they are limited so that they cannot flood a region)", ("Retry-After", f"{wait:.0f}"))
        if not self._slots.acquire(blocking=False):
            return _refuse(429, "debug probes are already running: try again in a moment", ("Retry-After", "1"))
        started = time.time()
        try:
            future = self._pool.submit(found.probe, found.target, found.timeout)
        except RuntimeError:  # the pool was shut down (the exporter is stopping)
            self._slots.release()
            return _refuse(503, "the exporter is shutting down")
        future.add_done_callback(lambda _f: self._slots.release())
        result = _wait(future, found.timeout)
        body = debug_log(found, result, started, time.time())
        return Response(200, (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                              ("X-Content-Type-Options", "nosniff")), body.encode())

    def lookup(self, name: str, region: str) -> DebugTarget | str:
        """The configured target `name` in `region`, or why not (one line). `name` is a target's name, or for one
        IP family of a target with `ip_families` its key, `<name>@ipv4` / `<name>@ipv6` (the name alone would not
        say which family)."""
        config = self._configured()
        targets = {t.key: t for t in config.targets}
        target = targets.get(name)
        if target is None:
            families = sorted(key for key, t in targets.items() if t.name == name)
            if families:
                return f"target {name} probes {len(families)} IP families: ask for one, {' or '.join(families)}"
            known = ", ".join(sorted(targets)) or "none"
            return f"no configured target {_show(name)} (configured: {known})"
        if region not in target.regions:
            return f"target {name} does not probe region {_show(region)} (its regions: {', '.join(target.regions)})"
        probe_target = target.probe_targets()[region]
        return DebugTarget(name=name, kind=target.config.probe, target=probe_target,
                           probe=get_probe(target.config.probe), timeout=target.config.timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- limits -----------------------------------------------------------------------------------------

    def _admit(self, name: str, region: str) -> float | None:
        """None when a probe of (name, region) may run now (and count it); else the seconds to wait."""
        now = self._clock()
        with self._lock:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            last = self._last_run.get((name, region))
            if last is not None and now - last < self._region_interval:
                return max(1.0, self._region_interval - (now - last))
            if self._tokens < 1.0:
                return max(1.0, (1.0 - self._tokens) / self._rate)
            self._tokens -= 1.0
            self._last_run[(name, region)] = now
            if len(self._last_run) > 10_000:  # configured pairs only, but never a growing map
                self._last_run = {k: v for k, v in self._last_run.items() if now - v < self._region_interval}
            return None


def _wait(future: Future[ProbeResult], timeout: float) -> ProbeResult | str:
    """The probe's result, or why there is none (probes return within their timeout; this is a guard)."""
    try:
        return future.result(timeout + 2.0)
    except FutureTimeout:
        return f"the probe did not return within {timeout + 2.0:g}s"
    except Exception as exc:
        return f"the probe raised {type(exc).__name__}: {exc}"


# -- the log --------------------------------------------------------------------------------------------


def debug_log(found: DebugTarget, result: ProbeResult | str, started: float, ended: float) -> str:
    """The probe's steps as logfmt lines, blackbox_exporter style, then its phase timings."""
    endpoint = parse_endpoint(found.target.url)
    web = endpoint.scheme in ("http", "https")  # scheme, host and port only: a URL's path or query is not shown
    where = f"{endpoint.scheme}://{endpoint.host_header()}" if web else f"{endpoint.host}:{endpoint.port}"
    lines = [
        "Logs for the probe:",
        _line(started, "info", "Beginning probe", target=found.name, region=found.target.region, probe=found.kind,
              endpoint=where, timeout_seconds=f"{found.timeout:g}"),
    ]
    if isinstance(result, str):
        lines.append(_line(ended, "error", "Probe failed", error="other", detail=result))
        lines.append("")
        lines.append("This probe was not recorded: the EMA, the ranking and /metrics do not see debug probes.")
        return "\n".join(lines) + "\n"
    phases = dict(result.phases)
    if endpoint.host_is_ip:
        lines.append(_line(None, "info", "Target is an IP address: no DNS lookup", ip=endpoint.host))
    else:
        lines.append(_line(None, "info", "Resolving target address", host=endpoint.host))
        if "dns" in phases:
            lines.append(_line(None, "info", "Resolved target address", ip=result.address or "?",
                               duration_seconds=_s(phases["dns"])))
    if "connect" in phases:
        lines.append(_line(None, "info", "TCP connection established",
                           address=f"{result.address or endpoint.host}:{endpoint.port}",
                           duration_seconds=_s(phases["connect"])))
    if "tls" in phases:
        lines.append(_line(None, "info", "TLS handshake done", version=result.tls_version or "?",
                           server_name=endpoint.host, duration_seconds=_s(phases["tls"])))
    if result.status is not None:
        fields = {"status_code": str(result.status)}
        if "ttfb" in phases:
            fields["ttfb_seconds"] = _s(phases["ttfb"])
        lines.append(_line(None, "info", "Received response", **fields))
    if found.kind == "api":
        lines.append(_line(None, "info", "The api probe times its signed call as one step (botocore): "
                                         "no DNS, connect or TLS steps of its own"))
    if result.ok:
        lines.append(_line(ended, "info", "Probe succeeded", latency_seconds=_s(result.latency or 0.0),
                           duration_seconds=_s(ended - started)))
    else:
        lines.append(_line(ended, "error", "Probe failed", error=str(result.error or "other"), detail=result.detail,
                           duration_seconds=_s(ended - started)))
    lines.append("")
    lines.append("Phase timings (seconds):")
    for name in ("dns", "connect", "tls", "ttfb", "total"):
        if name in phases:
            lines.append(f"  {name:<8} {_s(phases[name])}")
    if not phases:
        lines.append("  (none: the probe ended before its first step finished)")
    lines.append(f"Latency fed to the EMA by a scheduled probe: {_s(result.latency) if result.ok else 'none'}"
                 f" ({'ttfb' if found.kind == 'https' else 'connect' if found.kind == 'tcp' else 'total'})")
    lines.append("")
    lines.append("This probe was not recorded: the EMA, the ranking and /metrics do not see debug probes.")
    return "\n".join(lines) + "\n"


def _line(at: float | None, level: str, message: str, **fields: str) -> str:
    parts = [] if at is None else [f"ts={datetime.fromtimestamp(at, UTC).isoformat(timespec='milliseconds')}"]
    parts += [f"level={level}", f"msg={_quote(message)}"]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
    return " ".join(parts)


def _quote(value: str) -> str:
    if value and all(c.isprintable() and c not in ' "=' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.6f}"


def _show(text: str) -> str:
    """A name from the request, quoted and cut short, safe to echo in a one-line message."""
    return repr(text if len(text) <= 80 else text[:79] + "…")


def _refuse(status: int, message: str, *headers: tuple[str, str]) -> Response:
    return Response.text(status, message + "\n", ("X-Content-Type-Options", "nosniff"), *headers)
