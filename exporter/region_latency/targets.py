"""A validated configuration -> resolved targets: the regions each target probes, their endpoint URLs and the
probe `Target`s (typed options) the scheduler runs.

The only module that asks botocore about a configuration (through region_latency.regions): whether the service
and partition exist, what `regions: auto` means, whether a region name is real, the URL a default client would
send to. `serve` runs the botocore part (`place`) in a short-lived child process (region_latency.resolve) and
hands its answers to `resolve_targets`, so that the serving process never loads botocore's data.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from region_latency import regions as _regions
from region_latency.config import Config, ConfigError, TargetConfig, config_source, load_config
from region_latency.probes import PROBE_KINDS, Target
from region_latency.probes.base import parse_endpoint

Placement = tuple[tuple[str, ...], Mapping[str, str]]
"""A target's regions (in probe order) and each one's endpoint URL."""

PLACEMENT_FIELDS = ("service", "partition", "regions", "exclude_regions", "endpoints", "fips", "dualstack")
"""The fields of a TargetConfig that `place` reads: what the child process is sent."""


class PlacementError(ValueError):
    """A target whose regions or URLs cannot be worked out; `path` is the field under the target to blame."""

    def __init__(self, path: tuple[str | int, ...], problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """One configured target with its regions and endpoint URLs worked out."""

    config: TargetConfig
    regions: tuple[str, ...]
    urls: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.config.name

    def endpoint_for(self, region: str) -> str:
        """The URL probed in `region`: the explicit endpoint if given, else botocore's (KeyError if not probed)."""
        return self.urls[region]

    def probe_targets(self) -> dict[str, Target]:
        """region -> the probe `Target` (with the kind's typed options, validated at load), in probe order."""
        options = self.config.options
        return {region: Target(service=self.config.service, region=region, url=self.urls[region], options=options)
                for region in self.regions}


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """A configuration and its resolved targets, in the configuration's order."""

    config: Config
    targets: tuple[ResolvedTarget, ...]

    def dump(self) -> str:
        """The effective configuration as YAML, each target's regions spelled out (`check-config`)."""
        return self.config.dump(regions={t.name: t.regions for t in self.targets})


def place(*, service: str, partition: str, regions: str | Sequence[str], exclude_regions: Sequence[str],
          endpoints: Mapping[str, str], fips: bool, dualstack: bool) -> Placement:
    """The regions a target probes and their URLs, from botocore's data; PlacementError naming the field.

    `regions` is `auto` (botocore's list) or a list; `exclude_regions` are taken out; regions named only under
    `endpoints` are added after the others. Keyword arguments are PLACEMENT_FIELDS, plain data: the child process
    of region_latency.resolve calls this with what the parent sent.
    """
    try:
        _regions.check_service(service)
    except ValueError as exc:
        raise PlacementError(("service",), str(exc)) from None
    try:
        _regions.check_partition(partition)
    except ValueError as exc:
        raise PlacementError(("partition",), str(exc)) from None
    known = set(_regions.partition_regions(partition))
    for i, region in enumerate(exclude_regions):
        if region not in known and region not in endpoints:
            raise PlacementError(("exclude_regions", i), _unknown_region(region, partition, known))
    base = _regions.available_regions(service, partition) if regions == "auto" else list(regions)
    names = [r for r in base if r not in exclude_regions]
    names += [r for r in endpoints if r not in names and r not in exclude_regions]
    if not names:
        if regions == "auto" and not exclude_regions:
            raise PlacementError(("regions",), f"botocore knows no regions for {service!r} in partition "
                                               f"{partition!r}; list them under regions: or endpoints:")
        raise PlacementError(("regions",), "no regions left to probe (check regions and exclude_regions)")
    urls: dict[str, str] = {}
    for region in names:
        if region in endpoints:
            urls[region] = endpoints[region]
            continue
        position: tuple[str | int, ...] = ("regions", list(regions).index(region)) if regions != "auto" else (
            "regions",)
        if region not in known:
            raise PlacementError(position, _unknown_region(region, partition, known))
        try:
            urls[region] = _regions.endpoint_url(service, region, fips=fips, dualstack=dualstack)
        except ValueError as exc:
            if fips or dualstack:
                position = ("fips",) if fips else ("dualstack",)
            raise PlacementError(position, str(exc)) from None
    return tuple(names), MappingProxyType(urls)


def placement_request(target: TargetConfig) -> dict[str, Any]:
    """The keyword arguments of `place` for `target`, as JSON-ready data."""
    data = target.model_dump(mode="json", include=set(PLACEMENT_FIELDS))
    return {key: data[key] for key in PLACEMENT_FIELDS}


def resolve_target(target: TargetConfig, placement: Placement | None = None) -> ResolvedTarget:
    """`target` with its regions and URLs (`placement` when worked out already, else `place` here), each region
    checked by the probe kind (its URL with the options); PlacementError naming the field."""
    names, urls = placement if placement is not None else place(**placement_request(target))
    kind = PROBE_KINDS[target.probe]
    for region in names:
        try:  # the URL alone: a bad explicit endpoint is blamed on endpoints.<region>, not on options
            parse_endpoint(urls[region])
        except ValueError as exc:
            raise PlacementError(("endpoints", region) if region in target.endpoints else ("regions",),
                                 str(exc)) from None
        try:  # the options with the URL: the options' fault (the message names the URL when it matters)
            kind.check_target(Target(service=target.service, region=region, url=urls[region],
                                     options=target.options))
        except ValueError as exc:
            raise PlacementError(("options",), str(exc)) from None
    return ResolvedTarget(config=target, regions=tuple(names), urls=MappingProxyType(dict(urls)))


def resolve_targets(config: Config, source: str = "config",
                    placements: Sequence[Placement | PlacementError] | None = None) -> ResolvedConfig:
    """Every target of `config` resolved, in order; ConfigError (one line, named after `source`) for the first
    that cannot be. `placements` (per target, in order, from region_latency.resolve's child; a PlacementError
    where `place` failed, the list ending there) skip botocore."""
    resolved = []
    for i, target in enumerate(config.targets):
        try:
            given = placements[i] if placements is not None else None
            if isinstance(given, PlacementError):
                raise given
            resolved.append(resolve_target(target, given))
        except PlacementError as exc:
            raise ConfigError.at(source, ("targets", i, *exc.path), exc.problem) from None
    return ResolvedConfig(config=config, targets=tuple(resolved))


def load_targets(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, object] | None = None, text: str | None = None) -> ResolvedConfig:
    """`load_config`, then `resolve_targets` in this process (botocore included); ConfigError, one line."""
    config = load_config(path, env=env, overrides=overrides, text=text)
    return resolve_targets(config, config_source(path, env=env))


def _unknown_region(region: str, partition: str, known: set[str]) -> str:
    close = difflib.get_close_matches(region, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    elsewhere = _regions.region_partition(region)
    if elsewhere != partition and region in _regions.partition_regions(elsewhere):
        return f"region {region!r} is in partition {elsewhere!r}, not {partition!r}"
    return (f"unknown region {region!r} in partition {partition!r}{hint} "
            f"(a region botocore does not know needs an entry under endpoints:)")


__all__ = [
    "PLACEMENT_FIELDS",
    "Placement",
    "PlacementError",
    "ResolvedConfig",
    "ResolvedTarget",
    "load_targets",
    "place",
    "placement_request",
    "resolve_target",
    "resolve_targets",
]
