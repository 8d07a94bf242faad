"""Debian's promtool (and amtool, when installed) on the shipped files: the rules check clean, their unit tests
pass, and the example Prometheus and Alertmanager configurations are valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.repo_files import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (./test.sh installs it)"),
]
PROMETHEUS_DIR = REPO / "prometheus"


def _run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules_is_clean() -> None:
    rule_files = sorted(str(path) for path in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    result = _run("promtool", "check", "rules", *rule_files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout and "SUCCESS: 17 rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert_and_recording_rule_pass() -> None:
    tests = sorted(str(path) for path in (PROMETHEUS_DIR / "tests").glob("*.test.yml"))
    assert len(tests) == 2
    result = _run("promtool", "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_promtool_unit_tests_fail_when_an_alert_changes(tmp_path: Path) -> None:
    """The promtool tests pin the alerts: a different threshold makes them fail."""
    rules = tmp_path / "rules"
    shutil.copytree(PROMETHEUS_DIR / "rules", rules)
    alerts = rules / "region-latency-alerts.yml"
    alerts.write_text(alerts.read_text().replace("ema_seconds > 0.5", "ema_seconds > 0.9"))
    tests = tmp_path / "tests"
    shutil.copytree(PROMETHEUS_DIR / "tests", tests)
    result = _run("promtool", "test", "rules", str(tests / "alerts.test.yml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "RegionLatencyHigh" in result.stdout + result.stderr


def test_example_prometheus_config_is_valid() -> None:
    result = _run("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed (Debian: prometheus-alertmanager)")
def test_example_alertmanager_config_is_valid() -> None:
    result = _run("amtool", "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout
