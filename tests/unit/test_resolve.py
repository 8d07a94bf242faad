"""region_latency.resolve: the configuration validated here once, its targets placed (regions, URLs: botocore) in a
child process, gives the same resolved targets and the same one-line errors as an in-process load, and the loading
process never imports botocore."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from region_latency import resolve
from region_latency.config import ConfigError, load_config
from region_latency.targets import load_targets
from tests.unit.test_config import ERRORS

FILE = """
listen: "127.0.0.1:0"
cache: none
targets:
  - service: bedrock-runtime
    probe: https
    exclude_regions: [us-east-1]
    endpoints: {local: "https://127.0.0.1:8443"}
  - name: runtime-tcp
    service: bedrock-runtime
    probe: tcp
    regions: [eu-central-1, us-west-2]
    interval: 15s
    timeout: 2s
  - {service: s3, partition: aws-us-gov, fips: true, regions: [us-gov-west-1]}
  - {service: sts, dualstack: true, regions: [eu-west-1]}
"""


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default cache path lives under ~: keep it inside the test's directory (the child inherits it)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_same_config_as_an_in_process_load(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    env = {"REGION_LATENCY_CONCURRENCY": "9"}
    here = load_targets(path, env=env, overrides={"log_level": "debug"})
    there = resolve.load_config_isolated(path, env=env, overrides={"log_level": "debug"})
    assert there == here
    assert there.dump() == here.dump()
    for mine, theirs in zip(there.targets, here.targets, strict=True):
        assert mine.regions == theirs.regions
        assert mine.probe_targets() == theirs.probe_targets()
    assert (there.config.concurrency, there.config.log_level) == (9, "debug")
    assert there.targets[0].endpoint_for("local") == "https://127.0.0.1:8443"
    assert there.targets[2].endpoint_for("us-gov-west-1").startswith("https://s3-fips.")


def test_the_default_config_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGION_LATENCY_CONFIG", raising=False)
    assert resolve.load_config_isolated(None, env={}) == load_targets(None, env={})


CASES = [e for e in ERRORS if any(word in e[2] for word in (
    "unknown service", "unknown partition", "unknown region", "is in partition", "FIPS", "knows no regions",
    "duplicate target", "invalid duration", "unknown key (did you mean 'interval'"))]


@pytest.mark.parametrize(("text", "field", "problem"), CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_same_one_line_errors(tmp_path: Path, text: str, field: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as here:
        load_targets(path, env={})
    with pytest.raises(ConfigError) as there:
        resolve.load_config_isolated(path, env={})
    assert str(there.value) == str(here.value)
    assert (there.value.source, there.value.field) == (str(path), field) and problem in str(there.value)


def test_unreadable_file_yaml_and_override_errors(tmp_path: Path) -> None:
    def same(*args: object, **kwargs: object) -> str:
        with pytest.raises(ConfigError) as here:
            load_targets(*args, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as there:
            resolve.load_config_isolated(*args, **kwargs)  # type: ignore[arg-type]
        assert str(there.value) == str(here.value)
        return str(there.value)

    assert same(tmp_path / "nope.yaml", env={}).endswith("nope.yaml: cannot read: No such file or directory")
    assert "invalid YAML" in same(write(tmp_path, "a: b: c\n"), env={})
    path = write(tmp_path, "listen: ':1'\n")
    assert same(path, env={"REGION_LATENCY_CONCURRENCY": "lots"}).startswith("REGION_LATENCY_CONCURRENCY: ")
    assert same(path, env={}, overrides={"listen": "nope"}).startswith("--listen: listen: ")
    assert same(path, env={}, overrides={"port": 1}).startswith("overrides: port: unknown override")


def test_the_file_is_read_once(tmp_path: Path) -> None:
    """Parent and child see one version of the file, even when it changes between them."""
    path = write(tmp_path, FILE)
    pending = resolve.PendingConfig(path, env={})
    path.write_text("targets: [{service: nope}]\n")
    assert pending.result().config == load_config(path, env={}, text=FILE)


def test_the_loading_process_never_imports_botocore(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    code = ("import sys, region_latency.resolve as r\n"
            f"config = r.load_config_isolated({str(path)!r}, env={{}})\n"
            "print(len(config.targets), 'botocore' in sys.modules, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["4", "False", "False"], out.stderr


def test_placements_given_skip_botocore(tmp_path: Path) -> None:
    """resolve_targets(placements=...) takes the child's answers and does no botocore lookup."""
    path = write(tmp_path, "targets:\n  - {service: bedrock-runtime, probe: tcp, regions: [us-east-1]}\n")
    code = ("import sys\nfrom region_latency.config import load_config\n"
            "from region_latency.targets import resolve_targets\n"
            f"c = resolve_targets(load_config({str(path)!r}, env={{}}), 'x', "
            "placements=[(('us-east-1',), {'us-east-1': 'https://x.example'})])\n"
            "print(c.targets[0].endpoint_for('us-east-1'), 'botocore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["https://x.example", "False"], out.stderr


def test_the_first_problem_in_target_order_wins_as_in_process(tmp_path: Path) -> None:
    """Target 0's options do not fit its URL, target 1's region is unknown: both ways report target 0."""
    path = write(tmp_path, "targets:\n"
                           "  - {service: s3, probe: api, regions: [], endpoints: {local: 'http://127.0.0.1:1'}}\n"
                           "  - {service: s3, regions: [us-east1]}\n")
    with pytest.raises(ConfigError) as here:
        load_targets(path, env={})
    with pytest.raises(ConfigError) as there:
        resolve.load_config_isolated(path, env={})
    assert str(there.value) == str(here.value)
    assert here.value.field == "targets[0].options"


def test_a_child_that_cannot_answer_falls_back_to_an_in_process_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, FILE)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with caplog.at_level(logging.WARNING, logger="region_latency.resolve"):
        assert resolve.load_config_isolated(path, env={}) == load_targets(path, env={})
    assert "resolving regions in a child process failed (exit code 1); resolving here" in caplog.text


def test_the_child_protocol() -> None:
    """The child runs `place` only: placement fields in, regions and URLs (or the first error) out."""
    spec = {"service": "s3", "partition": "aws", "regions": ["us-east-1"], "exclude_regions": [], "endpoints": {},
            "fips": False, "dualstack": False}
    request = {"targets": [spec, {**spec, "regions": ["eu-west-1", "us-east1"]}]}
    out = subprocess.run([sys.executable, "-m", "region_latency.resolve"], input=json.dumps(request),
                         capture_output=True, text=True, check=True, timeout=60)
    first, second = json.loads(out.stdout)["targets"]
    assert first == {"regions": ["us-east-1"], "urls": {"us-east-1": "https://s3.amazonaws.com"}}
    assert second["error"]["path"] == ["regions", 1]
    assert second["error"]["problem"].startswith("unknown region 'us-east1' in partition 'aws'")
    out = subprocess.run([sys.executable, "-m", "region_latency.resolve"], input=json.dumps({"targets": [spec]}),
                         capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == {"targets": [{"regions": ["us-east-1"],
                                                   "urls": {"us-east-1": "https://s3.amazonaws.com"}}]}
