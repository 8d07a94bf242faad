"""The exporter's configuration schema: a YAML file, then environment variables, then CLI flags (later wins).

Typed, frozen pydantic v2 models and nothing else: parsed once, durations as float seconds, each probe kind's
options as that kind's own model (region_latency.probes), the ranking settings as the ranking's own model
(region_latency.ranking). Which regions and URLs a target probes is worked out from botocore's data afterwards,
by region_latency.targets. Every problem becomes one `ConfigError` whose message is a single line naming where the
value came from (file, env var or flag), the field path and the problem, so a bad config can be fixed without
reading a traceback. See docs/CONFIG.md for the schema.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from region_latency.durations import format_duration, parse_duration, positive_duration
from region_latency.metric_options import HistogramOptions, MetricsOptions
from region_latency.otlp_config import OtlpConfig, OtlpEnvError, apply_env
from region_latency.probes import PROBE_KINDS, ProbeOptions
from region_latency.ranking import RankingSettingError, RankingSettings
from region_latency.regions import DEFAULT_PARTITION, check_region_name

DEFAULT_LISTEN = ":9720"
DEFAULT_CACHE_PATH = "~/.cache/region-latency-exporter/latencies.json"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_KEY_PREFIX = "region-latency:"
DEFAULT_SERVICE = "bedrock-runtime"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_INTERVAL = 86400.0  # a probe interval (or timeout) of more than a day is a typo (`interval: 1.0e+300`)

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
    def at(cls, source: str, path: tuple[str | int, ...], problem: str) -> ConfigError:
        """The error for the field at `path` (e.g. `("targets", 0, "regions", 1)` -> `targets[0].regions[1]`)."""
        return cls(source, _format_loc(path), problem)

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


class TargetConfig(_Model):
    """One service probed one way in every region of a list; one tracker each.

    Only the schema: which regions `auto` means, whether the service, partition and region names exist in
    botocore's data, and the endpoint URLs are worked out by region_latency.targets.
    """

    name: str
    service: str
    probe: str = "https"
    partition: str = DEFAULT_PARTITION
    regions: Literal["auto"] | tuple[str, ...] = "auto"
    exclude_regions: tuple[str, ...] = ()
    endpoints: dict[str, str] = Field(default_factory=dict)
    fips: bool = False
    dualstack: bool = False
    ip_families: tuple[Literal["ipv4", "ipv6"], ...] = ()  # probe each region once per family (label ip_family)
    interval: float = 30.0
    timeout: float = 5.0
    options: ProbeOptions = Field(default=None, validate_default=True)  # the probe kind's own model
    metrics: MetricsOptions = Field(default_factory=MetricsOptions)  # optional series: docs/METRICS.md budget

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

    @field_validator("probe")
    @classmethod
    def _probe(cls, value: str) -> str:
        if value not in PROBE_KINDS:
            raise ValueError(f"unknown probe kind {value!r} (use {', '.join(sorted(PROBE_KINDS))})")
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
    def _options(cls, value: Any, info: ValidationInfo) -> Any:
        """Validated once, here, by the probe kind's own options model."""
        kind = PROBE_KINDS.get(info.data.get("probe", ""))
        if kind is None:
            return ProbeOptions()  # the unknown probe kind is the error to report
        return kind.options(_none_as_empty(value, {}))

    @field_serializer("options")
    def _dump_options(self, options: ProbeOptions) -> dict[str, Any]:
        return options.model_dump(exclude_unset=True)

    @field_validator("ip_families", mode="before")
    @classmethod
    def _ip_families(cls, value: Any) -> Any:
        value = _none_as_empty(value, [])
        if not isinstance(value, list | tuple):
            raise ValueError(f"ip_families must be a list of ipv4 and/or ipv6, not {value!r}")
        names = {4: "ipv4", 6: "ipv6", "4": "ipv4", "6": "ipv6", "ipv4": "ipv4", "ipv6": "ipv6"}
        families: list[str] = []
        for i, item in enumerate(value):
            family = names.get(item) if isinstance(item, int | str) and not isinstance(item, bool) else None
            if family is None:
                raise _FieldError((i,), f"unknown IP family {item!r} (use ipv4 or ipv6)")
            if family in families:
                raise _FieldError((i,), f"IP family {family} is listed twice")
            families.append(family)
        return tuple(families)

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, value: Any) -> Any:
        return _none_as_empty(value, {})

    @field_validator("interval", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return positive_duration(value, MAX_INTERVAL)

    @model_validator(mode="after")
    def _families_fit_the_probe(self) -> TargetConfig:
        if not self.ip_families:
            return self
        if "ip_version" not in type(self.options).model_fields:
            raise _FieldError(("ip_families",), f"the {self.probe} probe cannot choose an address family "
                                                f"(use tcp or https)")
        if getattr(self.options, "ip_version", None) is not None:
            raise _FieldError(("ip_families",), "give options.ip_version or ip_families, not both")
        return self

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> TargetConfig:
        if self.timeout >= self.interval:
            raise _FieldError(("timeout",), f"timeout ({format_duration(self.timeout)}) must be shorter than "
                                            f"interval ({format_duration(self.interval)})")
        return self

    def __hash__(self) -> int:
        # endpoints/options hold dicts, which pydantic's frozen hash cannot take; the name identifies a target
        return hash((self.name, self.service, self.probe, self.partition))


def _region_list(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of region names, not {value!r}")
    for i, item in enumerate(value):
        _check_region_label(item, path=(i,))
        if item in value[:i]:
            raise _FieldError((i,), f"region {item!r} is listed twice")
    return tuple(value)


def _check_region_label(region: Any, path: tuple[str | int, ...]) -> None:
    try:
        check_region_name(region)
    except ValueError as exc:
        raise _FieldError(path, str(exc)) from None


def _default_targets() -> tuple[TargetConfig, ...]:
    return (TargetConfig.model_validate({"service": DEFAULT_SERVICE}),)


class Config(_Model):
    """The whole configuration. `Config()` is the default: bedrock-runtime over https in every known region."""

    listen: str = DEFAULT_LISTEN
    cache: CacheConfig = Field(default_factory=CacheConfig)
    concurrency: int = Field(default=64, ge=1, le=4096)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    targets: tuple[TargetConfig, ...] = Field(default_factory=_default_targets)
    ranking: RankingSettings = Field(default_factory=lambda: RankingSettings.model_validate({}))
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)  # the OTLP push; OTEL_* variables fill it in

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
        value = _none_as_empty(value, {})
        if not isinstance(value, Mapping | RankingSettings):
            raise ValueError(f"must be a mapping, got {type(value).__name__}")
        return value

    @field_validator("otlp", mode="before")
    @classmethod
    def _otlp(cls, value: Any) -> Any:
        return _none_as_empty(value, {})

    @field_serializer("ranking")
    def _dump_ranking(self, ranking: RankingSettings) -> dict[str, Any]:
        return ranking.model_dump(exclude_unset=True)

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
    def _ranking_fits_every_interval(self) -> Config:
        """Some ranking limits depend on the probe interval (a ttl must exceed it): check them per target."""
        if self.ranking.policy != "trusted":
            return self
        for i, target in enumerate(self.targets):
            try:
                self.ranking.limits(target.interval)
            except RankingSettingError as exc:
                detail = exc.problem
                if i or len(self.targets) > 1 or "interval" in detail:
                    detail += f" (target {target.name}, interval {format_duration(target.interval)})"
                raise _FieldError(("ranking", exc.field), detail) from None
        return self

    def __hash__(self) -> int:
        return hash((self.listen, self.targets))

    @property
    def listen_address(self) -> tuple[str, int]:
        """(host, port) to bind; see `parse_listen`."""
        return parse_listen(self.listen)

    def as_dict(self, *, regions: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """Plain data in the file's own shape (durations as `30s`); `regions` (target name -> the regions it
        probes, from region_latency.targets) spells them out instead of `auto` / `exclude_regions`."""
        data = self.model_dump(mode="json")
        for target, raw in zip(self.targets, data["targets"], strict=True):
            raw["interval"] = format_duration(target.interval)
            raw["timeout"] = format_duration(target.timeout)
            if regions is not None and target.name in regions:
                raw["regions"] = list(regions[target.name])
                raw["exclude_regions"] = []
        return data

    def dump(self, *, regions: Mapping[str, Sequence[str]] | None = None) -> str:
        """The effective configuration as YAML that `load_config` reads back to an equal Config."""
        return yaml.safe_dump(self.as_dict(regions=regions), sort_keys=False, default_flow_style=False)


# --- loading ------------------------------------------------------------------------------------------------------


def read_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> tuple[str | os.PathLike[str] | None, str | None]:
    """(path, text) of the configuration file: `path`, else `$REGION_LATENCY_CONFIG`, else (None, None).

    ConfigError (one line) when the file cannot be read. `load_config(path, text=text)` then parses exactly this
    text (region_latency.resolve reads the file while its child process starts).
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    return path, (_read_text(Path(path)) if path is not None else None)


def config_source(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> str:
    """How errors name the configuration `load_config(path, env=env)` reads: the file, or `default config`."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    return str(path) if path is not None else "default config"


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, object] | None = None, text: str | None = None) -> Config:
    """Read the YAML file (or `$REGION_LATENCY_CONFIG`, or nothing: defaults), then apply env and CLI overrides.

    `env` defaults to os.environ; `overrides` (CLI flags) use the keys of OVERRIDES, None values are ignored.
    `text`, when given, is the file's content as `read_config` returned it (the file is not read again; `path`
    only names it in messages). No botocore: region_latency.targets works out regions and URLs afterwards.
    Raises ConfigError with a one-line message.
    """
    env = os.environ if env is None else env
    source = config_source(path, env=env)
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
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
    try:
        otlp, otlp_sources = apply_env(raw.get("otlp"), env)
    except OtlpEnvError as exc:
        raise ConfigError(exc.env, f"otlp.{exc.field}", exc.problem) from None
    if otlp_sources:
        raw = {**raw, "otlp": otlp}
        sources.update({("otlp", field): name for field, name in otlp_sources.items()})
    for key, value in (overrides or {}).items():
        if key not in OVERRIDES:
            raise ConfigError("overrides", key, f"unknown override (known: {', '.join(OVERRIDES)})")
        if value is not None:
            raw = _set_path(raw, OVERRIDES[key], value)
            sources[OVERRIDES[key]] = "--" + key.replace("_", "-")
    try:
        return Config.model_validate(raw)
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
    if data is None:  # a truncated or mis-mounted file must not quietly become "every region of bedrock-runtime"
        raise ConfigError(str(path), "", "the file has no settings (empty, or only comments); put at least one key "
                                         "in it, or leave the config file out for the built-in default")
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


_FIELDS_AT: dict[str, type[BaseModel]] = {"cache": CacheConfig, "targets": TargetConfig, "ranking": RankingSettings,
                                          "otlp": OtlpConfig}
_SECTIONS_AT: dict[str, type[BaseModel]] = {"metrics": MetricsOptions, "histogram": HistogramOptions}

# The ranking section's problems in the short words docs/RANKING.md uses (`ranking.max_failures: must be >= 1`).
_RANKING_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


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
        for part in loc[1:-1]:  # a section inside a target (metrics:, its histogram:)
            model = _SECTIONS_AT.get(str(part), model)
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(model.model_fields)}"
        return f"unknown key ({hint})"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    value = error.get("input")
    if kind in _RANKING_MESSAGES:  # pydantic's words ("Input should be a valid integer, unable to parse ...") -> ours
        message = _RANKING_MESSAGES[kind].format(**error.get("ctx", {}))
        if loc[0] == "ranking":
            return message
        return f"{message} (got {value!r})" if isinstance(value, str | int | float | bool) or value is None \
            else f"{message} (got a {type(value).__name__})"
    message = str(error["msg"])
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
    "DEFAULT_SERVICE",
    "OVERRIDES",
    "CacheConfig",
    "Config",
    "ConfigError",
    "TargetConfig",
    "config_source",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_listen",
    "read_config",
]
