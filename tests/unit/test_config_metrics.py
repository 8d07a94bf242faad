"""A target's `metrics:` section (issue 15): parsed, defaulted, refused with one line, dumped and read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from region_latency.config import ConfigError, load_config
from region_latency.metric_options import ALL_METRICS, DEFAULT_BUCKETS, DEFAULT_METRICS, PHASES


def config_with(tmp_path: Path, metrics: object) -> Path:
    path = tmp_path / "config.yaml"
    target: dict[str, object] = {"service": "bedrock-runtime", "regions": ["us-east-1"]}
    if metrics != "absent":
        target["metrics"] = metrics
    path.write_text(yaml.safe_dump({"targets": [target]}))
    return path


def test_defaults_when_absent_or_empty(tmp_path: Path) -> None:
    for metrics in ("absent", None, {}):  # type: ignore[var-annotated]
        assert load_config(config_with(tmp_path, metrics), env={}).targets[0].metrics == DEFAULT_METRICS
    assert DEFAULT_METRICS.histogram.buckets == DEFAULT_BUCKETS and DEFAULT_METRICS.region_state == "current"


@pytest.mark.parametrize(("metrics", "check"), [
    ({"histogram": False}, lambda m: not m.histogram.enabled),
    ({"histogram": [0.01, 0.1, 1]}, lambda m: m.histogram.buckets == (0.01, 0.1, 1.0)),
    ({"histogram": {"enabled": True, "buckets": [0.2]}}, lambda m: m.histogram.buckets == (0.2,)),
    ({"phases": True}, lambda m: m.phases == PHASES),
    ({"phases": False}, lambda m: m.phases == ()),
    ({"phases": ["ttfb", "dns"]}, lambda m: m.phases == ("dns", "ttfb")),
    ({"region_state": "all", "ranking_info": "all", "probe_details": True},
     lambda m: m.region_state == "all" and m.ranking_info == "all" and m.probe_details),
    ({"ranking_info": 3}, lambda m: m.ranked_positions(10) == 3 and m.ranked_positions(2) == 2),
])
def test_options(tmp_path: Path, metrics: dict[str, object], check: object) -> None:
    options = load_config(config_with(tmp_path, metrics), env={}).targets[0].metrics
    assert check(options)  # type: ignore[operator]


@pytest.mark.parametrize(("metrics", "message"), [
    ({"histogram": {"buckets": [0.5, 0.1]}}, "targets[0].metrics.histogram.buckets: bucket bounds must increase"),
    ({"histogram": {"bukets": [0.5]}}, "targets[0].metrics.histogram.bukets: unknown key (did you mean 'buckets'?)"),
    ({"phasez": True}, "targets[0].metrics.phasez: unknown key (did you mean 'phases'?)"),
    ({"phases": ["rtt"]}, "targets[0].metrics.phases: unknown phase 'rtt'"),
    ({"ranking_info": -2}, "targets[0].metrics.ranking_info: ranking_info must be a number"),
    ({"region_state": "some"}, "targets[0].metrics.region_state:"),
    ("lots", "targets[0].metrics:"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, metrics: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, metrics), env={})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_dump_reads_back_to_the_same_options(tmp_path: Path) -> None:
    path = config_with(tmp_path, {"phases": True, "region_state": "all", "ranking_info": "all",
                                  "probe_details": True})
    config = load_config(path, env={})
    assert config.targets[0].metrics == ALL_METRICS
    again = tmp_path / "again.yaml"
    again.write_text(config.dump())
    assert load_config(again, env={}) == config
