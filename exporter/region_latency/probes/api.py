"""The `api` probe: one real, signed boto3 call to the service in the target's region.

Timed from botocore's `before-send` to `before-parse` (see `_roundtrip`): signing, response parsing
and client creation are outside the window, and retries are off (one attempt), so the latency is the
network round trip of one request, like the `https` probe's `ttfb` plus the (small) body transfer.
Clients are cached per (service, region, URL, profile, verify, timeout) and keep their connections
alive, so after the first probe the window is a warm request, which is what an application's own
pooled client pays. The first probe on a new client also pays TCP connect and TLS.

Any service answer counts: AccessDenied, UnrecognizedClient, throttling or a 5xx still means the
round trip happened; the latency is recorded with the status and the error code in `detail`.

Options (`ApiOptions`, validated once when the configuration loads):
  operation   API operation name, e.g. "ListFoundationModels" (snake_case accepted); default from
              DEFAULT_OPERATIONS for the service, required for any other service
  params      keyword arguments for the operation (default {})
  profile     AWS profile name (default: the standard credential chain)
  ca_file     CA bundle path for TLS verification; `verify` (bool or path) and `insecure` as for https
The whole probe (client set-up included) is bounded by the timeout: the call runs on a worker
thread whose socket timeouts are the probe timeout, and the probe stops waiting at the deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from region_latency._version import __version__
from region_latency.probes._roundtrip import RoundTripTimer, classify, error_code
from region_latency.probes.base import Deadline, ErrorKind, ProbeResult, Target, TlsOptions, describe, short_detail

if TYPE_CHECKING:  # boto3 and botocore are imported when a probe runs: a process without api targets never does
    from botocore.client import BaseClient

DEFAULT_OPERATIONS: Mapping[str, str] = MappingProxyType(
    {
        "bedrock": "ListFoundationModels",  # GET /foundation-models, read-only, no input
        "bedrock-runtime": "ListAsyncInvokes",  # GET /async-invoke, read-only, no input
    }
)


class ApiOptions(TlsOptions):
    """The api probe's options. `verify` is a bool or a CA bundle path (botocore takes no SSLContext)."""

    kind: ClassVar[str] = "api"
    operation: str | None = None  # default: DEFAULT_OPERATIONS[service]
    params: dict[str, Any] = {}
    profile: str | None = None

    @field_validator("operation", mode="before")
    @classmethod
    def _operation(cls, operation: Any) -> Any:
        if operation is not None and (not isinstance(operation, str) or not operation):
            raise ValueError(f"api option 'operation' must be an API operation name, got {operation!r}")
        return operation

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, params: Any) -> Any:
        params = params or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"api option 'params' must be a mapping, got {params!r}")
        return dict(params)

    @field_validator("profile", mode="before")
    @classmethod
    def _profile(cls, profile: Any) -> Any:
        if profile is not None and not isinstance(profile, str):
            raise ValueError(f"api option 'profile' must be a profile name, got {profile!r}")
        return profile

    @field_validator("verify")
    @classmethod
    def _verify(cls, verify: Any) -> Any:
        if verify is not None and not isinstance(verify, bool | str):
            raise ValueError(f"api option 'verify' must be a bool or a CA bundle path, got {verify!r}")
        return verify

    @property
    def botocore_verify(self) -> bool | str | None:
        """botocore's `verify`: None (default bundle), False (no verification) or a CA bundle path."""
        return False if not self.verifies else self.ca_bundle


def check_target(target: Target) -> None:
    """ValueError for a bad URL or option (what `probe` would refuse at run time)."""
    ApiCall.from_target(target, 1.0)


def probe(target: Target, timeout: float) -> ProbeResult:
    """Make the target's API call once, bounded by `timeout`; the latency is its network window."""
    deadline = Deadline(timeout)
    call = ApiCall.from_target(target, deadline.timeout)
    return _bounded(lambda stage: _make_call(call, stage), deadline)


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One validated api target: which client to use and what to call on it."""

    service: str
    region: str
    url: str
    operation: str
    params: Mapping[str, Any]
    profile: str | None
    verify: bool | str | None
    timeout: float

    @classmethod
    def from_target(cls, target: Target, timeout: float) -> ApiCall:
        """The call for a target (its options validated already, or here); ValueError says what is wrong."""
        options = ApiOptions.parse(target.options)
        if not target.service or not isinstance(target.service, str):
            raise ValueError(f"api probe needs a service name, got {target.service!r}")
        if not target.url.startswith(("https://", "http://")):
            raise ValueError(f"api probe needs an http(s):// endpoint URL, got {target.url!r}")
        operation = options.operation or DEFAULT_OPERATIONS.get(target.service)
        if not operation:
            known = ", ".join(f"{s}: {o}" for s, o in DEFAULT_OPERATIONS.items())
            raise ValueError(
                f"api probe for service {target.service!r} needs options['operation'] "
                f"(defaults exist only for {known})"
            )
        return cls(target.service, target.region, target.url, operation, options.params, options.profile,
                   options.botocore_verify, timeout)

    @property
    def client_key(self) -> tuple[Any, ...]:
        return (self.service, self.region, self.url, self.profile, self.verify, self.timeout)


# -- the call, on a worker thread -----------------------------------------------------------------------

_window = threading.local()  # the worker thread's last (seconds, status) from the RoundTripTimer


def _make_call(call: ApiCall, stage: list[str]) -> ProbeResult:
    from botocore import exceptions as bce

    client = _cached_client(call)
    if isinstance(client, ProbeResult):
        return client
    method = getattr(client, _method_name(client, call.operation))
    stage[0] = "the API call"
    _window.last = None
    try:
        method(**call.params)
    except bce.ClientError as exc:
        return _answered(detail=error_code(exc.response))
    except bce.ParamValidationError as exc:
        raise ValueError(f"api option 'params' do not fit {call.operation}: {exc}") from None
    except bce.BotoCoreError as exc:
        if _window.last is not None:  # answered, but the answer did not parse: the round trip happened
            return _answered(detail=f"unparsable response: {describe(exc)}")
        return ProbeResult.failure(*classify(exc))
    return _answered(detail="")


def _answered(detail: str) -> ProbeResult:
    last = _window.last
    if last is None:
        return ProbeResult.failure(ErrorKind.OTHER, short_detail(f"no request was sent {detail}".strip()))
    seconds, status = last
    return ProbeResult(latency=seconds, phases=MappingProxyType({"total": seconds}), status=status,
                       detail=detail)


def _record_window(seconds: float, status: int, operation: str) -> None:
    _window.last = (seconds, status)


def _bounded(work: Callable[[list[str]], ProbeResult], deadline: Deadline) -> ProbeResult:
    """Run `work` on a daemon thread; a result after the deadline is dropped (the thread ends on its
    own socket timeouts). Bad input (ValueError) is re-raised on the caller's thread."""
    stage = ["client set-up"]
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["result"] = work(stage)
        except ValueError as exc:
            box["error"] = exc
        except Exception as exc:  # a bug or an unexpected botocore failure: a result, not a dead probe
            box["result"] = ProbeResult.failure(ErrorKind.OTHER, describe(exc))
        finally:
            done.set()

    threading.Thread(target=run, name="api-probe", daemon=True).start()
    if not done.wait(deadline.remaining()):
        return ProbeResult.failure(ErrorKind.TIMEOUT, f"no answer within {deadline.timeout:g}s (during {stage[0]})")
    if "error" in box:
        raise box["error"]
    result: ProbeResult = box["result"]
    return result


# -- cached clients -------------------------------------------------------------------------------------

_clients: dict[tuple[Any, ...], BaseClient] = {}
_creation_locks: dict[tuple[Any, ...], threading.Lock] = {}
_clients_lock = threading.Lock()


def _cached_client(call: ApiCall) -> BaseClient | ProbeResult:
    """The client for `call`, created once per key (creation is slow and never timed).

    Without credentials no client is kept, so credentials that appear later are picked up.
    """
    key = call.client_key
    with _clients_lock:
        client = _clients.get(key)
        lock = _creation_locks.setdefault(key, threading.Lock())
    if client is not None:
        return client
    with lock:
        with _clients_lock:
            client = _clients.get(key)
        if client is not None:
            return client
        made = _new_client(call)
        if not isinstance(made, ProbeResult):
            with _clients_lock:
                _clients[key] = made
        return made


def _new_client(call: ApiCall) -> BaseClient | ProbeResult:
    import boto3
    from botocore import exceptions as bce
    from botocore.config import Config

    try:
        session = boto3.session.Session(profile_name=call.profile)
    except bce.ProfileNotFound as exc:
        raise ValueError(f"api option 'profile': {exc}") from None
    try:
        credentials = session.get_credentials()
    except bce.BotoCoreError as exc:
        return ProbeResult.failure(ErrorKind.CREDENTIALS, f"loading AWS credentials failed: {describe(exc)}")
    if credentials is None:
        return ProbeResult.failure(ErrorKind.CREDENTIALS, "no AWS credentials found (env, profile, SSO, IMDS)")
    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=call.timeout,
        read_timeout=call.timeout,
        user_agent_extra=f"region-latency-exporter/{__version__}",
    )
    make_client: Callable[..., BaseClient] = session.client  # the service name is data, not a stub's literal
    try:
        client = make_client(call.service, region_name=call.region, endpoint_url=call.url,
                             verify=call.verify, config=config)
    except bce.UnknownServiceError:
        raise ValueError(f"api probe: botocore knows no service {call.service!r}") from None
    RoundTripTimer(_record_window, lambda exc: None).attach(client.meta.events)
    return client


def _method_name(client: BaseClient, operation: str) -> str:
    """The client method for an operation given as an API name or as its snake_case method name."""
    import botocore
    names = client.meta.service_model.operation_names
    by_method = {botocore.xform_name(name): name for name in names}
    if operation in names:
        return botocore.xform_name(operation)
    if operation in by_method:
        return operation
    raise ValueError(
        f"service {client.meta.service_model.service_name!r} has no operation {operation!r} "
        f"in botocore {botocore.__version__} (some: {', '.join(sorted(names)[:8])})"
    )


def clear_clients() -> None:
    """Close and forget every cached client (tests; or after credentials or config change)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
        _creation_locks.clear()
    for client in clients:
        client.close()
