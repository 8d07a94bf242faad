"""A region's state changes are logged once per change (never per probe), with target, region and reason."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from region_latency.logs import setup_logging
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import RankingSettings, TrustedRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO, message: str) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if f'msg="{message}"' in line]


def test_failing_recovering_stale_and_the_fastest_are_logged_once_per_change(log_text: io.StringIO) -> None:
    clock = Clock()
    policy = TrustedRanking(10.0, RankingSettings.model_validate({"min_samples": 1, "max_failures": 2}))
    state = TargetState(TargetInfo("bedrock", "bedrock-runtime", "https"), ["eu-west-1", "us-east-1"],
                        RegionLatencyTracker(clock=clock), policy, clock=clock)
    for _ in range(3):
        clock.now += 10
        state.record("eu-west-1", ProbeResult(0.020))
        state.record("us-east-1", ProbeResult(0.090))
    (took,) = lines(log_text, "fastest region changed")
    assert "target=bedrock region=eu-west-1 previous=none" in took and 'reason="first ranked region"' in took

    for _ in range(6):  # many failed probes: one line
        clock.now += 10
        state.record("eu-west-1", ProbeResult.failure(ErrorKind.TIMEOUT, "no answer within 5s"))
        state.record("us-east-1", ProbeResult(0.090))
    (failing,) = lines(log_text, "region failing")
    assert failing.startswith("ts=") and " level=warning " in failing
    assert "target=bedrock region=eu-west-1 state=failing previous=healthy" in failing
    assert 'reason="timeout: no answer within 5s"' in failing
    lost = lines(log_text, "fastest region changed")[1]
    assert "region=us-east-1 previous=eu-west-1" in lost
    assert 'reason="previous #1 failed a probe (timeout: no answer within 5s)"' in lost

    for _ in range(20):  # answering again (after its ejection back-off): one line
        clock.now += 10
        state.record("eu-west-1", ProbeResult(0.020))
        state.record("us-east-1", ProbeResult(0.090))
    (recovered,) = lines(log_text, "region recovered")
    assert "region=eu-west-1 state=healthy previous=failing" in recovered

    clock.now += 1000  # nothing heard for longer than the ttl
    for _ in range(5):
        state.reevaluate()
    stale = lines(log_text, "region stale")
    assert sorted(line.split("region=")[1].split()[0] for line in stale) == ["eu-west-1", "us-east-1"]
    assert len(lines(log_text, "region failing")) == 1 and len(lines(log_text, "region recovered")) == 1


def test_json_logs_carry_the_same_fields(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    try:
        clock = Clock()
        state = TargetState(TargetInfo("t", "s3", "tcp"), ["r-1"], RegionLatencyTracker(clock=clock),
                            TrustedRanking(10.0, RankingSettings.model_validate({"min_samples": 1})), clock=clock)
        state.record("r-1", ProbeResult(0.01))
    finally:
        logging.getLogger().handlers.clear()
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (record["msg"], record["target"], record["region"], record["reason"]) == (
        "fastest region changed", "t", "r-1", "first ranked region")
