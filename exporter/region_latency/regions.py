"""Region lists and endpoint URLs from botocore's own data, never from a hand-kept list.

- Regions come from botocore's endpoints.json (`Session.get_available_regions`). Some services are missing there:
  `bedrock-runtime` lists no regions, its hosts appear as `bedrock-runtime-<region>` entries under `bedrock`.
  When a service's own list is empty we look for such `<service>-<region>` entries under any service of the
  partition (see `available_regions`).
- Endpoint URLs come from the service's endpoint ruleset (`endpoint-rule-set-1`), evaluated by botocore's own
  `EndpointProvider` with the built-in parameters a default client passes. That is the URL a request really goes
  to. (`client.meta.endpoint_url` is *not*: it comes from the legacy endpoints.json resolver and differs from the
  request URL for ~60 services whose rulesets use `*.api.aws` or a global host. Resolving a ruleset takes
  microseconds; creating a client per region takes ~5 ms and megabytes.)

botocore is imported on first use, so `import region_latency.regions` stays cheap. One botocore session is shared
by every caller; a lock serialises access to it (botocore's session and loader are not documented thread-safe).
"""

from __future__ import annotations

import difflib
import functools
import re
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.endpoint_provider import EndpointProvider
    from botocore.session import Session

DEFAULT_PARTITION = "aws"

REGION_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""What a region name may look like: one DNS label (rulesets put the name into a hostname). The only copy."""

_lock = threading.RLock()
_session: Session | None = None

# Built-in ruleset parameters as a default client (no config file, no env) sets them; see botocore's
# ClientArgsCreator.compute_endpoint_resolver_builtin_defaults. Region, FIPS and dual-stack are filled per call.
_DEFAULT_BUILTINS: dict[str, Any] = {
    "AWS::STS::UseGlobalEndpoint": False,  # sts_regional_endpoints defaults to "regional"
    "AWS::S3::Accelerate": False,
    "AWS::S3::ForcePathStyle": False,
    "AWS::S3::UseArnRegion": True,
    "AWS::S3Control::UseArnRegion": False,
    "AWS::S3::DisableMultiRegionAccessPoints": False,
}


def _botocore_session() -> Session:
    """The shared botocore session, created on first use (importing botocore costs ~100 ms)."""
    global _session
    with _lock:
        if _session is None:
            import botocore.session

            _session = botocore.session.Session()
        return _session


def _loader() -> Any:
    return _botocore_session().get_component("data_loader")


@functools.cache
def known_services() -> list[str]:
    """Every service name botocore has a model for (e.g. `bedrock-runtime`, `s3`), sorted."""
    with _lock:
        return sorted(_botocore_session().get_available_services())


@functools.cache
def partitions() -> list[str]:
    """Every partition botocore knows (`aws`, `aws-cn`, `aws-us-gov`, ...), in botocore's order."""
    with _lock:
        return list(_botocore_session().get_available_partitions())


def partition_regions(partition: str = DEFAULT_PARTITION) -> list[str]:
    """Every region botocore knows in `partition` (any service), sorted; pseudo-regions like aws-global excluded.

    For telling a typo (`us-east1`) from a real region a service is not listed in.
    """
    check_partition(partition)
    return list(_partition_regions(partition))


@functools.cache
def _partition_regions(partition: str) -> tuple[str, ...]:
    with _lock:
        session = _botocore_session()
        found: set[str] = set()
        for data in session.get_component("data_loader").load_data("partitions")["partitions"]:
            if data["id"] == partition:
                found.update(name for name in data["regions"] if re.match(data["regionRegex"], name))
        for data in session.get_data("endpoints")["partitions"]:
            if data["partition"] == partition:
                found.update(data["regions"])
    return tuple(sorted(found))


def check_service(service: str) -> None:
    """ValueError naming close matches when botocore has no model for `service`."""
    known = known_services()
    if service in known:
        return
    close = difflib.get_close_matches(service, known, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see `known_services()`)"
    raise ValueError(f"unknown service {service!r}: botocore has no model for it{hint}")


def check_partition(partition: str) -> None:
    """ValueError listing the known partitions when `partition` is not one of them."""
    known = partitions()
    if partition not in known:
        raise ValueError(f"unknown partition {partition!r} (known: {', '.join(known)})")


def available_regions(service: str, partition: str = DEFAULT_PARTITION) -> list[str]:
    """The regions botocore knows for `service` in `partition`, sorted.

    botocore's own list first; when that is empty, the regions of `<service>-<region>` entries found under another
    service of the partition (how endpoints.json lists bedrock-runtime, under bedrock). FIPS entries
    (`<service>-fips-<region>`) and deprecated ones are not regions and are skipped.
    Empty when botocore knows the service but no regions for it.
    """
    check_service(service)
    check_partition(partition)
    return list(_available_regions(service, partition))


@functools.cache
def _available_regions(service: str, partition: str) -> tuple[str, ...]:
    with _lock:
        session = _botocore_session()
        regions = session.get_available_regions(service, partition)
        if not regions:
            names = {service, _endpoint_prefix(service)}
            regions = _prefixed_entries(session.get_data("endpoints"), names, partition)
    return tuple(sorted(set(regions)))


def _endpoint_prefix(service: str) -> str:
    """endpoints.json keys services by endpoint prefix (`elb` is `elasticloadbalancing`)."""
    metadata = _loader().load_service_model(service, "service-2").get("metadata", {})
    return str(metadata.get("endpointPrefix", service))


def _prefixed_entries(endpoints: dict[str, Any], names: set[str], partition: str) -> list[str]:
    """Regions `r` of endpoint keys `<name>-<r>` under any service of the partition."""
    found: list[str] = []
    for data in endpoints["partitions"]:
        if data["partition"] != partition:
            continue
        region_regex = re.compile(data["regionRegex"])
        for service_data in data["services"].values():
            for key, entry in service_data.get("endpoints", {}).items():
                region = _region_suffix(key, names)
                if region is None or entry.get("deprecated"):
                    continue
                if region in data["regions"] or region_regex.match(region):
                    found.append(region)
    return found


def _region_suffix(key: str, names: set[str]) -> str | None:
    for name in names:
        if key.startswith(name + "-"):
            return key[len(name) + 1:]
    return None


def check_region_name(region: object) -> None:
    """ValueError unless `region` can be a DNS label (some rulesets would put anything in a hostname)."""
    if not isinstance(region, str) or not REGION_NAME.fullmatch(region):
        raise ValueError(f"invalid region name {region!r} (lowercase letters, digits and '-', e.g. us-east-1)")


def region_partition(region: str) -> str:
    """The partition a region belongs to, by the rulesets' own `aws.partition` function (unknown names that
    match no partition's pattern fall back to `aws`, as the rulesets do)."""
    return str(_partition_library().aws_partition(region)["name"])


@functools.cache
def _partition_library() -> Any:
    with _lock:
        from botocore.endpoint_provider import RuleSetStandardLibrary

        return RuleSetStandardLibrary(_loader().load_data("partitions"))


@functools.lru_cache(maxsize=4096)
def endpoint_url(service: str, region: str, *, fips: bool = False, dualstack: bool = False,
                 operation: str | None = None) -> str:
    """The https URL a default botocore client for `service` in `region` sends requests to.

    A few services resolve per operation (acm, neptune-graph, s3's directory buckets...): `operation` picks one;
    without it the endpoint most of the service's operations use. ValueError for an unknown service or operation,
    or when the ruleset refuses (e.g. FIPS where the partition has none, or an endpoint that needs call
    parameters such as an ARN).
    """
    check_service(service)
    check_region_name(region)
    from botocore.exceptions import EndpointProviderError

    params = _builtin_params(service, region, fips=fips, dualstack=dualstack)
    try:
        with _lock:
            if operation is not None:
                params.update(_static_context(service, operation))
                return str(_provider(service).resolve_endpoint(**params).url)
            try:
                return str(_provider(service).resolve_endpoint(**params).url)
            except EndpointProviderError:
                params.update(_most_common_static_context(service))
                return str(_provider(service).resolve_endpoint(**params).url)
    except EndpointProviderError as exc:
        where = f"{service} in {region!r}" + (" (fips)" if fips else "") + (" (dualstack)" if dualstack else "")
        raise ValueError(f"no endpoint for {where}: {exc}") from None


@functools.cache
def _provider(service: str) -> EndpointProvider:
    """The service's ruleset, parsed once."""
    from botocore.endpoint_provider import EndpointProvider

    with _lock:
        ruleset = _loader().load_service_model(service, "endpoint-rule-set-1")
        return EndpointProvider(ruleset_data=ruleset, partition_data=_loader().load_data("partitions"))


def _builtin_params(service: str, region: str, *, fips: bool, dualstack: bool) -> dict[str, Any]:
    """Ruleset parameters bound to built-ins, valued as a default client values them."""
    builtins = {
        **_DEFAULT_BUILTINS,
        "AWS::Region": region,
        "AWS::UseFIPS": fips,
        "AWS::UseDualStack": dualstack,
        # s3_us_east_1_regional_endpoint defaults to "legacy": us-east-1 uses the global s3.amazonaws.com
        "AWS::S3::UseGlobalEndpoint": region == "us-east-1",
    }
    with _lock:
        definitions = _provider(service).ruleset.parameters
    return {name: builtins[d.builtin] for name, d in definitions.items() if d.builtin in builtins}


def _static_context(service: str, operation: str) -> dict[str, Any]:
    """The fixed ruleset parameters an operation sets (e.g. neptune-graph's ApiType)."""
    model = _service_model(service)
    if operation not in model.operation_names:
        close = difflib.get_close_matches(operation, model.operation_names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"service {service!r} has no operation {operation!r}{hint}")
    return {p.name: p.value for p in model.operation_model(operation).static_context_parameters}


@functools.cache
def _most_common_static_context(service: str) -> dict[str, Any]:
    """The static context most operations share: the service's main endpoint when it has several."""
    model = _service_model(service)
    counts = Counter(tuple(sorted(_static_context(service, op).items())) for op in sorted(model.operation_names))
    return dict(counts.most_common(1)[0][0]) if counts else {}


@functools.cache
def _service_model(service: str) -> Any:
    from botocore.model import ServiceModel

    with _lock:
        return ServiceModel(_loader().load_service_model(service, "service-2"), service_name=service)


__all__ = [
    "DEFAULT_PARTITION",
    "REGION_NAME",
    "available_regions",
    "check_partition",
    "check_region_name",
    "check_service",
    "endpoint_url",
    "known_services",
    "partition_regions",
    "partitions",
    "region_partition",
]
