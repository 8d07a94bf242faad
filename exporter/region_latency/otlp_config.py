"""The `otlp:` section of the configuration, and the standard OTEL_* environment variables that fill it in.

Kept apart from export/otel.py so that reading a configuration never imports the OpenTelemetry SDK (config.py
includes the model; `check-config` and the resolving child process stay light). Environment variables override
the file, as every other REGION_LATENCY_* variable does (file, then env, then flags); the maps (headers,
resource attributes) are merged key by key. Header values are secrets: they are held as `SecretStr`, shown as
`**********` by `check-config`, and never part of an error message (a malformed OTEL_EXPORTER_OTLP_HEADERS is
named by its position, not its text).
"""

from __future__ import annotations

import importlib.util
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, field_validator, model_validator

from region_latency.durations import format_duration, positive_duration

DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
METRICS_PATH = "v1/metrics"
DEFAULT_SERVICE_NAME = "region-latency-exporter"
VANTAGE_ENV = "REGION_LATENCY_VANTAGE"
VANTAGE_ATTRIBUTE = "vantage"
GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"

Protocol = Literal["http/protobuf", "grpc"]

# env var -> (field, how its value reads); a signal-specific variable (METRICS_) wins over the general one
_SCALARS: tuple[tuple[str, str, str], ...] = (
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint", "text"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "metrics_endpoint", "text"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "protocol", "text"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "protocol", "text"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "compression", "text"),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "compression", "text"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "timeout", "millis"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "timeout", "millis"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "interval", "millis"),
    ("OTEL_SERVICE_NAME", "service_name", "text"),
    (VANTAGE_ENV, "vantage", "text"),
)
_MAPS: tuple[tuple[str, str], ...] = (
    ("OTEL_EXPORTER_OTLP_HEADERS", "headers"),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "headers"),
    ("OTEL_RESOURCE_ATTRIBUTES", "resource_attributes"),
)
SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"

# HTTP header field names (RFC 9110 tokens)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class OtlpEnvError(ValueError):
    """A malformed OTEL_* variable: `env` names it, `field` is the otlp field it sets (config.py makes the
    one-line ConfigError)."""

    def __init__(self, env: str, field: str, problem: str) -> None:
        self.env = env
        self.field = field
        self.problem = problem
        super().__init__(f"{env}: otlp.{field}: {problem}")


class OtlpConfig(BaseModel):
    """Push the same measurements over OTLP. Off unless an endpoint is given (file or env) or `enabled: true`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool | None = None  # None: on exactly when an endpoint is given
    endpoint: str | None = None  # base URL; http/protobuf appends /v1/metrics (OTEL_EXPORTER_OTLP_ENDPOINT)
    metrics_endpoint: str | None = None  # the full URL, used as is (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    protocol: Protocol = "http/protobuf"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    compression: Literal["none", "gzip"] = "none"
    interval: float = 60.0  # between two exports (the next waits for the previous one: they never overlap)
    timeout: float = 10.0  # one export, retries included
    service_name: str = DEFAULT_SERVICE_NAME
    vantage: str | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    histogram: Literal["exponential", "explicit"] = "exponential"

    @field_validator("endpoint", "metrics_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")  # the URL is not repeated: it may hold a token
        if parts.password is not None:
            raise ValueError("a password in the URL would be shown and logged: put credentials under headers")
        return value.strip()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        if value == "http/json":
            raise ValueError("http/json is not supported by the Python OTLP exporter (use http/protobuf or grpc)")
        if value not in ("http/protobuf", "grpc"):
            raise ValueError(f"unknown protocol {value!r} (use http/protobuf or grpc)")
        return value

    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("none", "gzip"):
            return value.strip().lower()
        raise ValueError(f"unknown compression {value!r} (use none or gzip)")

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of header name to value")
        out: dict[str, Any] = {}
        for name, text in value.items():
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            secret = text.get_secret_value() if isinstance(text, SecretStr) else text
            if not isinstance(secret, str) or "\r" in secret or "\n" in secret:
                raise ValueError(f"header {name!r}: the value must be one line of text")  # never the value
            out[name.lower()] = secret
        return out

    @field_serializer("headers")
    def _dump_headers(self, headers: dict[str, SecretStr]) -> dict[str, str]:
        return {name: "**********" for name in headers}

    @field_validator("interval", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return positive_duration(value)

    @field_serializer("interval", "timeout")
    def _dump_duration(self, seconds: float) -> str:
        return format_duration(seconds)

    @field_validator("service_name")
    @classmethod
    def _service_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("resource_attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of attribute name to value")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"invalid attribute name {key!r}")
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError(f"attribute {key!r}: the value must be text or a number")
            out[key] = str(item)
        return out

    @model_validator(mode="after")
    def _checks(self) -> OtlpConfig:
        if self.active and self.protocol == "grpc" and not grpc_available():
            raise ValueError("protocol grpc needs the grpc extra: pip install 'region-latency-exporter[grpc]'")
        return self

    @property
    def active(self) -> bool:
        """Whether the exporter pushes: `enabled`, else whether an endpoint is given."""
        if self.enabled is not None:
            return self.enabled
        return self.endpoint is not None or self.metrics_endpoint is not None

    @property
    def url(self) -> str:
        """Where the requests go: metrics_endpoint as is; else endpoint (or the default) plus /v1/metrics for
        http/protobuf, as the OTel SDKs do; gRPC takes the endpoint as is."""
        if self.metrics_endpoint:
            return self.metrics_endpoint
        if self.protocol == "grpc":
            return self.endpoint or DEFAULT_GRPC_ENDPOINT
        return f"{(self.endpoint or DEFAULT_HTTP_ENDPOINT).removesuffix('/')}/{METRICS_PATH}"

    def header_values(self) -> dict[str, str]:
        """The headers with their secret values, for the exporter only."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}

    def resource(self, version: str) -> dict[str, str]:
        """The resource attributes: the configured ones, plus service.name (service_name, unless only the
        attributes name it), service.version (ours), service.instance.id (the host name unless given) and the
        vantage point."""
        attributes = {"service.instance.id": socket.gethostname(), **self.resource_attributes,
                      "service.version": version}
        # OTEL_SERVICE_NAME (or service_name:) wins over a service.name among the attributes, as in the OTel SDKs
        if "service_name" in self.model_fields_set or "service.name" not in attributes:
            attributes["service.name"] = self.service_name
        if self.vantage:
            attributes[VANTAGE_ATTRIBUTE] = self.vantage
        return attributes


def _pairs(text: str, env: str, field: str, *, secret: bool) -> dict[str, str]:
    """`key1=value1,key2=value2` with percent-encoded values, as the OTel spec writes headers and resource
    attributes in the environment. A bad entry is named by position only when `secret`."""
    out: dict[str, str] = {}
    for position, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            shown = f"entry {position}" if secret else repr(entry.strip())
            raise OtlpEnvError(env, field, f"{shown} is not key=value")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def apply_env(section: Any, env: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """The file's `otlp:` section (raw, possibly None) with the OTEL_* variables of `env` applied, and for each
    field set from the environment the variable that set it (for error messages). OtlpEnvError for a malformed
    variable; the model validates the values themselves."""
    if section is not None and not isinstance(section, Mapping):
        return section, {}  # not a mapping: the model reports it
    raw: dict[str, Any] = dict(section or {})
    sources: dict[str, str] = {}
    for name, field, kind in _SCALARS:
        value = env.get(name, "").strip()
        if not value:
            continue
        raw[field] = f"{value}ms" if kind == "millis" and re.fullmatch(r"\d+(\.\d*)?", value) else value
        sources[field] = name
    for name, field in _MAPS:
        value = env.get(name, "")
        if value.strip():
            given = raw.get(field)
            base = dict(given) if isinstance(given, Mapping) else {}
            raw[field] = {**base, **_pairs(value, name, field, secret=field == "headers")}
            sources[field] = name
    if env.get(SDK_DISABLED_ENV, "").strip().lower() == "true":
        raw["enabled"] = False
        sources["enabled"] = SDK_DISABLED_ENV
    return raw, sources


def grpc_available() -> bool:
    return importlib.util.find_spec("grpc") is not None and importlib.util.find_spec(
        "opentelemetry.exporter.otlp.proto.grpc") is not None
