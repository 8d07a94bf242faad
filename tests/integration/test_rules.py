"""Alert rules, recording rules and dashboards on real parts: Debian's Prometheus scrapes two real exporter
processes (vantage points site-a and site-b) that probe four local stand-in regions, with prometheus/rules loaded.

The test stops a stand-in region (the failing-region alert goes pending), then the fastest one (the
fastest-region-changed alert fires), and runs every dashboard query with its variables substituted by the values
Prometheus has, as Grafana would; a query without data fails and names its panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus import prometheus_binary
from tests.support.repo_files import REPO
from tests.support.rules_stack import TARGET, VANTAGE_POINTS, RulesStack, has_finite_value

pytestmark = [pytest.mark.integration]

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval would be at a 1 s scrape interval on a short range


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RulesStack]:
    if prometheus_binary() is None:
        pytest.skip("prometheus not installed (./test.sh installs it as root)")
    running = RulesStack(tmp_path_factory.mktemp("rules"))
    try:
        running.wait_for_ranking()
        yield running
    finally:
        running.close()


def test_failing_region_alert_goes_pending_when_a_region_stops(stack: RulesStack) -> None:
    assert not _alerts_for(stack, "RegionLatencyRegionFailing", "us-east-1")
    stack.stop_region("us-east-1")
    alerts = stack.wait("RegionLatencyRegionFailing for us-east-1 at both vantage points",
                        lambda: _both_vantages(_alerts_for(stack, "RegionLatencyRegionFailing", "us-east-1")))
    for alert in alerts:
        assert alert["state"] in ("pending", "firing")
        assert alert["labels"]["reason"] == "refused"
        assert alert["labels"]["target"] == TARGET
        description = alert["annotations"]["description"]
        assert "us-east-1" in description and TARGET in description and "refused" in description, description
        assert alert["annotations"]["runbook_url"].endswith("ALERTS.md#regionlatencyregionfailing")


def test_fastest_region_changed_fires_when_the_fastest_region_dies(stack: RulesStack) -> None:
    assert not _alerts_for(stack, "RegionLatencyFastestRegionChanged", "ap-south-1"), "fired before #1 died"
    stack.stop_region("eu-west-1")
    alerts = stack.wait(
        "RegionLatencyFastestRegionChanged firing for ap-south-1 at both vantage points",
        lambda: _both_vantages([a for a in _alerts_for(stack, "RegionLatencyFastestRegionChanged", "ap-south-1")
                                if a["state"] == "firing"]))
    assert {alert["labels"]["target"] for alert in alerts} == {TARGET}
    assert "ap-south-1 is now the fastest region" in alerts[0]["annotations"]["summary"]


def test_every_rule_evaluates_without_error(stack: RulesStack) -> None:
    _with_failures(stack)

    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in stack.prometheus.api("rules")["groups"] for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else []

    rules = stack.wait("every rule evaluated once", evaluated)
    failed = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not failed
    assert len(rules) == 28


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_dashboard_variables_resolve_to_real_values(stack: RulesStack, path: Path) -> None:
    values = _variable_values(stack, json.loads(path.read_text()))
    assert values["vantage"] == "(site-a|site-b)"
    assert values["target"] == TARGET


def _panel_cases() -> list[Any]:
    cases = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        items = [(panel["title"], panel["targets"]) for panel in dashboard["panels"] if panel["type"] != "row"]
        items += [(f"annotation {a['name']}", [{"refId": "A", "expr": a["expr"], "instant": False}])
                  for a in dashboard["annotations"]["list"] if "expr" in a]
        for title, targets in items:
            cases.append(pytest.param(path, title, targets, id=f"{path.stem}: {title}"))
    return cases


@pytest.mark.parametrize(("path", "title", "targets"), _panel_cases())
def test_dashboard_panel_query_returns_data(stack: RulesStack, path: Path, title: str,
                                            targets: list[dict[str, Any]]) -> None:
    _with_failures(stack)
    values = _variable_values(stack, json.loads(path.read_text()))
    for target in targets:
        expr = _substitute(target["expr"], values)
        result = stack.query(expr) if target.get("instant") else stack.query_range(expr)
        assert has_finite_value(result), f"panel {title!r} ({path.name}), query {target['refId']}: no data for {expr}"


def _with_failures(stack: RulesStack) -> None:
    """The state the dashboards are checked in: two regions down (failures, failing states), two still ranked."""
    stack.stop_region("us-east-1")
    stack.stop_region("eu-west-1")
    stack.wait("both stopped regions failing at both vantage points, failure rates recorded",
               lambda: len(stack.query('region_latency_region_state{state="failing"} == 1')) == 4
               and len(stack.query("target_region_reason:region_latency_probe_failures:rate > 0")) == 4
               and len(stack.query(f'region_latency_rank{{target="{TARGET}"}}')) == 4)


def _alerts_for(stack: RulesStack, name: str, region: str) -> list[dict[str, Any]]:
    return [alert for alert in stack.alerts(name) if alert["labels"].get("region") == region]


def _both_vantages(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return alerts if {alert["labels"]["vantage"] for alert in alerts} == set(VANTAGE_POINTS) else []


def _variable_values(stack: RulesStack, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable's values as Grafana would substitute "All selected": (v1|v2), regex-escaped."""
    values: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
        assert match, f"variable {variable['name']}: not a label_values() query: {variable['query']}"
        selector, label = match.groups()
        result = stack.query(f"group by ({label}) ({_substitute(selector, values)})")
        found = sorted(sample["metric"][label] for sample in result if label in sample["metric"])
        assert found, f"variable {variable['name']} has no values: {variable['query']}"
        escaped = [re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\\\1", value) for value in found]
        values[variable["name"]] = escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"
    return values


def _substitute(expr: str, values: dict[str, str]) -> str:
    out = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(values, key=len, reverse=True):
        out = out.replace(f"${name}", values[name])
    assert "$" not in out, f"unknown variable in {expr}"
    return out

