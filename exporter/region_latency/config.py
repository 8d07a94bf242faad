"""The exporter's configuration: a YAML file, then environment variables, then CLI flags (later wins).

Models are frozen pydantic v2 models; durations are float seconds. Every problem becomes one `ConfigError` whose
message is a single line naming where the value came from (file, env var or flag), the field path and the problem,
so a bad config can be fixed without reading a traceback. See docs/CONFIG.md for the schema.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from region_latency import regions as _regions
from region_latency.probes import PROBE_KINDS, Target, check_target

DEFAULT_LISTEN = ":9720"
DEFAULT_CACHE_PATH = "~/.cache/region-latency-exporter/latencies.json"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_KEY_PREFIX = "region-latency:"
DEFAULT_SERVICE = "bedrock-runtime"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

CONFIG_ENV = "REGION_LATENCY_CONFIG"
ENV_PREFIX = "REGION_LATENCY_"
# override key -> path of the field it sets; env var = ENV_PREFIX + key.upper(), CLI overrides use the key itself
OVERRIDES: dict[str, tuple[str, ...]] = {
    "listen": ("listen",),
    "cache": ("cache", "type"),
    "cache_path": ("cache", "path"),
    "redis_url": ("cache", "url"),
    "concurrency": ("concurrency",),
    "log_level": ("log_level",),
}


class ConfigError(Exception):
    """A configuration problem; str() is one line: `<source>: <field>: <problem>`."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = " ".join(problem.split())
        super().__init__(": ".join(part for part in (source, field, self.problem) if part))

    @classmethod
    def from_validation(cls, exc: ValidationError, source: str) -> ConfigError:
        """One line from a ValidationError of any model here (e.g. a TargetConfig built from CLI flags)."""
        return _config_error(exc, source, {})


class _FieldError(ValueError):
    """Raised inside a model validator to blame a sub-field (pydantic would blame the whole model)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        super().__init__(message)


# --- value parsers ------------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: str | float) -> float:
    """Seconds from `500ms`, `5s`, `1m`, `1h`, `1m30s` or a plain number of seconds.

    ValueError for anything else, negative or non-finite values.
    """
    hint = "(use e.g. 500ms, 30s, 1m)"
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} {hint}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"invalid duration {value!r} {hint}")
    else:
        raise ValueError(f"invalid duration {value!r} {hint}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time {hint}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of `500ms`, `30s`, `5m`, `1h` that is exact; for dumps that read like the input."""
    for unit in ("h", "m", "s"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    millis = round(seconds * 1000, 6)
    if seconds < 1 and millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds:g}s"


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) from `host:port`, `[ipv6]:port` or `:port`; an empty host means all interfaces (0.0.0.0).

    Port 0 asks the OS for a free port (tests). ValueError for anything else.
    """
    hint = "(use host:port, e.g. :9720 or 127.0.0.1:9720 or [::1]:9720)"
    if not isinstance(listen, str):
        raise ValueError(f"invalid listen address {listen!r} {hint}")
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid listen address {listen!r} {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or not re.fullmatch(r"[0-9A-Fa-f:.%a-z]+", host) or ":" not in host:
            raise ValueError(f"invalid listen address {listen!r}: bad IPv6 address {hint}")
    elif ":" in host:
        raise ValueError(f"invalid listen address {listen!r}: put IPv6 addresses in brackets {hint}")
    elif host and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid listen address {listen!r}: bad host {host!r} {hint}")
    return host or "0.0.0.0", int(port_text)


# --- models -------------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    """Frozen, and strict about unknown keys: a misspelt key must fail loudly, not fall back to a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _none_as_empty(value: Any, empty: Any) -> Any:
    """YAML `key:` with nothing after it is null: read it as empty, not as a type error."""
    return empty if value is None else value


class CacheConfig(_Model):
    """Where the trackers persist their averages across restarts. `cache: none` is short for `{type: none}`."""

    type: Literal["file", "redis", "none"] = "file"
    path: Path = Field(default_factory=lambda: Path(DEFAULT_CACHE_PATH).expanduser())
    url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_REDIS_KEY_PREFIX

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("file", "redis", "none"):
            return value.lower()
        if value is None:
            return "none"
        raise ValueError(f"unknown cache type {value!r} (use file, redis or none)")

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ValueError(f"invalid path {value!r}")
        return Path(value).expanduser()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"(rediss?|unix)://", value):
            raise ValueError(f"invalid redis URL {value!r} (use redis://host:port/db, rediss:// or unix://)")
        return value


def _resolution(info: ValidationInfo, name: object) -> Mapping[str, Any] | None:
    """The target's regions and URLs worked out beforehand (`load_config(resolved=...)`), or None: resolve here."""
    resolved = (info.context or {}).get("resolved")
    if not isinstance(resolved, Mapping) or not isinstance(name, str):
        return None
    entry = resolved.get(name)
    if (not isinstance(entry, Mapping) or not isinstance(entry.get("regions"), list | tuple)
            or not isinstance(entry.get("urls"), Mapping)
            or any(not isinstance(entry["urls"].get(r), str) for r in entry["regions"])):
        return None
    return entry


class TargetConfig(_Model):
    """One service probed one way in every region of a list; one tracker each.

    Validation resolves the regions and URLs with botocore (region_latency.regions), unless the validation context
    carries them already: `{"resolved": {target name: {"regions": [...], "urls": {region: url}}}}`, as worked out
    by an earlier validation of the same input (region_latency.resolve does that in a child process, so that the
    serving process never imports botocore). Then the botocore checks (service, partition, region names) are
    skipped: that earlier validation made them.
    """

    name: str
    service: str
    probe: str = "https"
    partition: str = _regions.DEFAULT_PARTITION
    regions: Literal["auto"] | tuple[str, ...] = "auto"
    exclude_regions: tuple[str, ...] = ()
    endpoints: dict[str, str] = Field(default_factory=dict)
    fips: bool = False
    dualstack: bool = False
    interval: float = 30.0
    timeout: float = 5.0
    options: dict[str, Any] = Field(default_factory=dict)

    _region_names: tuple[str, ...] = PrivateAttr(default=())
    _urls: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is None:
            # without a usable service, a placeholder keeps the error on `service`, not on a missing name
            service = data.get("service") if isinstance(data.get("service"), str) else "target"
            return {**data, "name": f"{service}-{data.get('probe') or 'https'}"}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", value):
            raise ValueError(f"invalid target name {value!r} (letters, digits, '-', '_', '.', ':'; no spaces)")
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str, info: ValidationInfo) -> str:
        if _resolution(info, info.data.get("name")) is None:
            _regions.check_service(value)
        return value

    @field_validator("probe")
    @classmethod
    def _probe(cls, value: str) -> str:
        if value not in PROBE_KINDS:
            raise ValueError(f"unknown probe kind {value!r} (use {', '.join(sorted(PROBE_KINDS))})")
        return value

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str, info: ValidationInfo) -> str:
        if _resolution(info, info.data.get("name")) is None:
            _regions.check_partition(value)
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _regions_shape(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, str):
            raise ValueError(f"regions must be 'auto' or a list of region names, not {value!r}")
        return _region_list(value, "regions")

    @field_validator("exclude_regions", mode="before")
    @classmethod
    def _exclude_shape(cls, value: Any) -> Any:
        return _region_list(_none_as_empty(value, []), "exclude_regions")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoints(cls, value: Any) -> Any:
        value = _none_as_empty(value, {})
        if not isinstance(value, Mapping):
            raise ValueError("endpoints must be a mapping of region name to URL")
        for region, url in value.items():
            _check_region_label(region, path=(region,))
            if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", url):
                raise _FieldError((region,), f"invalid endpoint URL {url!r} (must be http:// or https://)")
        return dict(value)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        return _none_as_empty(value, {})

    @field_validator("interval", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"must be greater than zero (got {value!r})")
        return seconds

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> TargetConfig:
        if self.timeout >= self.interval:
            raise _FieldError(("timeout",), f"timeout ({format_duration(self.timeout)}) must be shorter than "
                                            f"interval ({format_duration(self.interval)})")
        given = _resolution(info, self.name)
        if given is not None:
            self._region_names = tuple(given["regions"])
            self._urls = {region: given["urls"][region] for region in self._region_names}
        else:
            names = self._effective_regions()
            self._region_names = names
            self._urls = {region: self._url_for(region) for region in names}
        for target in self.probe_targets():
            try:
                check_target(self.probe, target)
            except ValueError as exc:
                raise _FieldError(("options",), f"{exc} (region {target.region})") from None
        return self

    def _effective_regions(self) -> tuple[str, ...]:
        """auto (botocore's list) or the given list, minus exclude_regions, plus regions named only in endpoints."""
        known = set(_regions.partition_regions(self.partition))
        for i, region in enumerate(self.exclude_regions):
            if region not in known and region not in self.endpoints:
                raise _FieldError(("exclude_regions", i), _unknown_region(region, self.partition, known))
        if self.regions == "auto":
            base = _regions.available_regions(self.service, self.partition)
        else:
            base = list(self.regions)
        names = [r for r in base if r not in self.exclude_regions]
        names += [r for r in self.endpoints if r not in names and r not in self.exclude_regions]
        if not names:
            raise _FieldError(("regions",), self._no_regions_message())
        return tuple(names)

    def _no_regions_message(self) -> str:
        if self.regions == "auto" and not self.exclude_regions:
            return (f"botocore knows no regions for {self.service!r} in partition {self.partition!r}; "
                    f"list them under regions: or endpoints:")
        return "no regions left to probe (check regions and exclude_regions)"

    def _url_for(self, region: str) -> str:
        if region in self.endpoints:
            return self.endpoints[region]
        known = _regions.partition_regions(self.partition)
        position = ("regions", self.regions.index(region)) if isinstance(self.regions, tuple) else ("regions",)
        if region not in known:
            raise _FieldError(position, _unknown_region(region, self.partition, set(known)))
        try:
            return _regions.endpoint_url(self.service, region, fips=self.fips, dualstack=self.dualstack)
        except ValueError as exc:
            if self.fips or self.dualstack:
                position = ("fips",) if self.fips else ("dualstack",)
            raise _FieldError(position, str(exc)) from None

    def __hash__(self) -> int:
        # endpoints/options are dicts, which pydantic's frozen hash cannot take; the name identifies a target
        return hash((self.name, self.service, self.probe, self.partition))

    @property
    def region_names(self) -> tuple[str, ...]:
        """The regions this target probes, in order: resolved from `regions`, `exclude_regions`, `endpoints`."""
        return self._region_names

    def endpoint_for(self, region: str) -> str:
        """The URL probed in `region`: the explicit endpoint if given, else botocore's (KeyError if not probed)."""
        return self._urls[region]

    def probe_targets(self) -> list[Target]:
        """One probe `Target` per region, carrying the target's options."""
        return [Target(service=self.service, region=r, url=self._urls[r], options=dict(self.options))
                for r in self._region_names]


def _region_list(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of region names, not {value!r}")
    for i, item in enumerate(value):
        _check_region_label(item, path=(i,))
        if item in value[:i]:
            raise _FieldError((i,), f"region {item!r} is listed twice")
    return tuple(value)


def _check_region_label(region: Any, path: tuple[str | int, ...]) -> None:
    if not isinstance(region, str) or not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", region):
        raise _FieldError(path, f"invalid region name {region!r} (lowercase letters, digits and '-', "
                                f"e.g. us-east-1)")


def _unknown_region(region: str, partition: str, known: set[str]) -> str:
    close = difflib.get_close_matches(region, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    elsewhere = _regions.region_partition(region)
    if elsewhere != partition and region in _regions.partition_regions(elsewhere):
        return f"region {region!r} is in partition {elsewhere!r}, not {partition!r}"
    return (f"unknown region {region!r} in partition {partition!r}{hint} "
            f"(a region botocore does not know needs an entry under endpoints:)")


def _default_targets() -> tuple[TargetConfig, ...]:
    return (TargetConfig.model_validate({"service": DEFAULT_SERVICE}),)


class Config(_Model):
    """The whole configuration. `Config()` is the default: bedrock-runtime over https in every known region."""

    listen: str = DEFAULT_LISTEN
    cache: CacheConfig = Field(default_factory=CacheConfig)
    concurrency: int = Field(default=64, ge=1, le=4096)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    targets: tuple[TargetConfig, ...] = Field(default_factory=_default_targets)
    ranking: dict[str, Any] = Field(default_factory=dict)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f":{value}"  # `listen: 9720` is a port
        parse_listen(value)
        return str(value)

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, value: Any) -> Any:
        return _none_as_empty(value, "none")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number (got {value!r})")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        raise ValueError(f"unknown log level {value!r} (use {', '.join(LOG_LEVELS)})")

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if value is None or (isinstance(value, list | tuple) and not value):
            raise ValueError("no targets: list at least one (or leave targets out for the default)")
        return value

    @field_validator("ranking", mode="before")
    @classmethod
    def _ranking(cls, value: Any) -> Any:
        return _none_as_empty(value, {})

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, int] = {}
        for i, target in enumerate(self.targets):
            if target.name in seen:
                raise _FieldError(("targets", i, "name"),
                                  f"duplicate target name {target.name!r} (also targets[{seen[target.name]}]); "
                                  "give each target a unique name")
            seen[target.name] = i
        return self

    @model_validator(mode="after")
    def _ranking_settings(self) -> Config:
        """Build every target's ranking policy once: some limits depend on the target's interval."""
        from region_latency.ranking import policy_from_config

        for i, target in enumerate(self.targets):
            try:
                policy_from_config(self.ranking, interval=target.interval)
            except ValueError as exc:
                field, _, problem = str(exc).partition(": ")
                path = tuple(field.split(".")) if field.startswith("ranking") and problem else ("ranking",)
                detail = problem or str(exc)
                if i or len(self.targets) > 1 or "interval" in detail:
                    detail += f" (target {target.name}, interval {format_duration(target.interval)})"
                raise _FieldError(path, detail) from None
        return self

    def __hash__(self) -> int:
        return hash((self.listen, self.targets))

    @property
    def listen_address(self) -> tuple[str, int]:
        """(host, port) to bind; see `parse_listen`."""
        return parse_listen(self.listen)

    def as_dict(self, *, resolved: bool = False) -> dict[str, Any]:
        """Plain data in the file's own shape (durations as `30s`); `resolved` spells out each target's regions."""
        data = self.model_dump(mode="json")
        for target, raw in zip(self.targets, data["targets"], strict=True):
            raw["interval"] = format_duration(target.interval)
            raw["timeout"] = format_duration(target.timeout)
            if resolved:
                raw["regions"] = list(target.region_names)
                raw["exclude_regions"] = []
        return data

    def dump(self, *, resolved: bool = False) -> str:
        """The effective configuration as YAML that `load_config` reads back to an equal Config."""
        return yaml.safe_dump(self.as_dict(resolved=resolved), sort_keys=False, default_flow_style=False)


# --- loading ------------------------------------------------------------------------------------------------------


def read_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> tuple[str | os.PathLike[str] | None, str | None]:
    """(path, text) of the configuration file: `path`, else `$REGION_LATENCY_CONFIG`, else (None, None).

    ConfigError (one line) when the file cannot be read. `load_config(path, text=text)` then parses exactly this
    text, so two loads of one text (see region_latency.resolve) cannot see two versions of the file.
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    return path, (_read_text(Path(path)) if path is not None else None)


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, object] | None = None, text: str | None = None,
                resolved: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Read the YAML file (or `$REGION_LATENCY_CONFIG`, or nothing: defaults), then apply env and CLI overrides.

    `env` defaults to os.environ; `overrides` (CLI flags) use the keys of OVERRIDES, None values are ignored.
    `text`, when given, is the file's content as `read_config` returned it (the file is not read again; `path`
    only names it in messages). `resolved` maps target names to their regions and URLs worked out by an earlier
    load of the same input (see `TargetConfig`); targets it names need no botocore.
    Raises ConfigError with a one-line message.
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    source = str(path) if path is not None else "default config"
    if path is None:
        raw: dict[str, Any] = {}
    else:
        raw = _parse_yaml(_read_text(Path(path)) if text is None else text, Path(path))
    sources: dict[tuple[str, ...], str] = {}
    for key, field_path in OVERRIDES.items():
        env_name = ENV_PREFIX + key.upper()
        if env.get(env_name):
            raw = _set_path(raw, field_path, env[env_name])
            sources[field_path] = env_name
    for key, value in (overrides or {}).items():
        if key not in OVERRIDES:
            raise ConfigError("overrides", key, f"unknown override (known: {', '.join(OVERRIDES)})")
        if value is not None:
            raw = _set_path(raw, OVERRIDES[key], value)
            sources[OVERRIDES[key]] = "--" + key.replace("_", "-")
    if "targets" not in raw:
        # the default target, spelled out so that it is validated with the context (a default_factory is not)
        raw = {**raw, "targets": [{"service": DEFAULT_SERVICE}]}
    try:
        return Config.model_validate(raw, context={"resolved": resolved} if resolved is not None else None)
    except ValidationError as exc:
        raise _config_error(exc, source, sources) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one, hiding typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 text: {exc.reason}") from None


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(where, "", f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"the top level must be a mapping of keys (listen, targets, ...), "
                                         f"not a {type(data).__name__}")
    return data


def _set_path(raw: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """A copy of `raw` with `value` at `path` (a `cache: none` shorthand is widened to a mapping first)."""
    out = dict(raw)
    if len(path) == 1:
        out[path[0]] = value
        return out
    inner = out.get(path[0])
    if isinstance(inner, str):
        inner = {"type": inner}
    out[path[0]] = _set_path(inner if isinstance(inner, dict) else {}, path[1:], value)
    return out


_FIELDS_AT: dict[str, type[BaseModel]] = {"cache": CacheConfig, "targets": TargetConfig}


def _config_error(exc: ValidationError, source: str, sources: Mapping[tuple[str, ...], str]) -> ConfigError:
    """The first validation error as one line; the rest are counted (fix one thing at a time)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc: tuple[str | int, ...] = tuple(first["loc"])
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _FieldError):
        loc += ctx_error.path
    problem = _problem(first, loc)
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    for field_path, label in sources.items():
        common = min(len(loc), len(field_path))
        if common and tuple(loc[:common]) == field_path[:common]:  # at, under or above the overridden field
            source = label
    return ConfigError(source, _format_loc(loc), problem)


def _problem(error: Any, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _FIELDS_AT.get(str(loc[0]), Config) if len(loc) > 1 else Config
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(model.model_fields)}"
        return f"unknown key ({hint})"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    message = str(error["msg"])
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        message += f" (got {value!r})"
    return message


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CACHE_PATH",
    "DEFAULT_LISTEN",
    "OVERRIDES",
    "CacheConfig",
    "Config",
    "ConfigError",
    "TargetConfig",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_listen",
    "read_config",
]
