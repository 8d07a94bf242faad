"""Log formats (logfmt, JSON) and the redaction of URL passwords."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from region_latency.logs import redact, setup_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("region_latency").level)
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("region_latency").setLevel(saved[2])


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://user:PASSWORD@host:6379/0", "redis://user:xxxxx@host:6379/0"),
    ("rediss://:p%40ss@cache.internal/1", "rediss://:xxxxx@cache.internal/1"),
    ("https://alice:hunter2@proxy.example:8443/x and http://bob:pw@h/", "https://alice:xxxxx@proxy.example:8443/x "
                                                                        "and http://bob:xxxxx@h/"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("no url here: user:pass@host", "no url here: user:pass@host"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_logfmt_line(stream: io.StringIO) -> None:
    setup_logging("info", "logfmt", stream)
    logging.getLogger("region_latency.app").info("region %s failing", "eu-west-1",
                                                 extra={"target": "bedrock", "reason": "timeout", "ema": 0.125})
    line = stream.getvalue().strip()
    assert "\n" not in line
    assert line.startswith("ts=") and " level=info logger=region_latency.app " in line
    assert 'msg="region eu-west-1 failing"' in line
    assert "target=bedrock reason=timeout ema=0.125" in line


def test_json_line_and_tracebacks_on_one_line(stream: io.StringIO) -> None:
    setup_logging("info", "json", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("region_latency.x").exception("failed", extra={"region": "us-east-1"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "error" and record["msg"] == "failed" and record["region"] == "us-east-1"
    assert "RuntimeError: boom" in record["err"]


def test_passwords_never_reach_a_line(stream: io.StringIO) -> None:
    setup_logging("debug", "logfmt", stream)
    log = logging.getLogger("region_latency.cache")
    log.warning("cannot save to %s", "redis://user:PASSWORD@host/0")
    log.warning("cannot save", extra={"url": "redis://user:PASSWORD@host/0"})
    try:
        raise ConnectionError("Error connecting to redis://user:PASSWORD@host/0")
    except ConnectionError:
        log.exception("save failed")
    logging.getLogger("redis").error("library says redis://u:PASSWORD@h")
    text = stream.getvalue()
    assert "PASSWORD" not in text
    assert text.count("xxxxx") >= 4  # the traceback quotes the raising line too


def test_levels(stream: io.StringIO) -> None:
    setup_logging("warning", "logfmt", stream)
    logging.getLogger("region_latency.a").info("hidden")
    logging.getLogger("region_latency.a").warning("shown")
    logging.getLogger("botocore").info("library chatter")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    assert "chatter" not in stream.getvalue()
