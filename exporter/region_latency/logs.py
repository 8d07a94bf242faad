"""Log lines as Prometheus' own tools write them: logfmt (the default) or JSON, one line per record.

`--log.format logfmt|json` and `--log.level`, as node_exporter and blackbox_exporter spell them. Context travels
as `extra=` fields (`log.info("region failing", extra={"target": t, "region": r, "reason": k})`) and becomes
`key=value` pairs (or JSON members). Every record passes through `redact` first: a URL's password
(`redis://user:PASSWORD@host`) never reaches a log line, whatever code logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["logfmt", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("logfmt", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# user:password@ in any scheme://... (redis, rediss, http, https, unix); the password may hold anything but '@'
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]*)(?=@)", re.IGNORECASE)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_BARE = re.compile(r"[^\s\"=\\]+")


def redact(text: str) -> str:
    """`text` with every URL password replaced by `xxxxx` (`redis://user:xxxxx@host/0`)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "xxxxx", text) if "://" in text else text


class RedactingFilter(logging.Filter):
    """Renders the message once, redacted, so that no formatter (ours or a library's) sees the secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    millis = int((record.created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _exception_text(record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return redact(formatter.formatException(record.exc_info))
    return None


class LogfmtFormatter(logging.Formatter):
    """`ts=… level=info logger=… msg="…" key=value …`; a traceback, if any, as one escaped `err=` value."""

    def format(self, record: logging.LogRecord) -> str:
        pairs: list[tuple[str, object]] = [
            ("ts", _timestamp(record)),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", redact(record.getMessage())),
        ]
        pairs += _fields(record).items()
        error = _exception_text(record, self)
        if error:
            pairs.append(("err", error))
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs)


def _logfmt_value(value: object) -> str:
    text = redact(value if isinstance(value, str) else _plain(value))
    if text and _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def _plain(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, the record's extra fields, `err` if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            out[key] = redact(value) if isinstance(value, str) else value
        error = _exception_text(record, self)
        if error:
            out["err"] = error
        return json.dumps(out, default=lambda v: redact(str(v)), ensure_ascii=False)


def setup_logging(level: str = "info", fmt: LogFormat = "logfmt", stream: TextIO | None = None) -> None:
    """Route every logger (ours and libraries') to one stderr handler in `fmt`, at `level` for ours.

    Libraries stay at warning unless `level` is debug, so a debug run of ours is not drowned by botocore.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric if numeric == logging.DEBUG else logging.WARNING)
    logging.getLogger("region_latency").setLevel(numeric)
