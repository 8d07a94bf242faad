"""prometheus/: the committed rule files are the generator's output, every alert carries what an on-call person
needs, every threshold is used and documented, and every alert has promtool tests that show it firing and not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql_names import known_names, metric_names
from tests.support.repo_files import REPO, load

generate = load("prometheus/generate.py")
RULES = REPO / "prometheus" / "rules"
ALERTS_MD = (REPO / "docs" / "ALERTS.md").read_text()


def _rules(kind: str) -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if kind in rule]
    return rules


def test_committed_rule_files_are_the_generator_output() -> None:
    rendered = generate.render(generate.load_thresholds())
    assert sorted(rendered) == sorted(path.name for path in RULES.glob("*.yml"))
    for name, text in rendered.items():
        assert (RULES / name).read_text() == text, f"{name} is stale: run python prometheus/generate.py"


def test_the_issue_lists_these_alerts() -> None:
    assert [rule["alert"] for rule in _rules("alert")] == [
        "RegionLatencyHigh", "RegionLatencyAboveBaseline", "RegionLatencyFastestRegionChanged",
        "RegionLatencyRankingFlapping", "RegionLatencyRegionFailing", "RegionLatencyRegionStale",
        "RegionLatencyNoRegionRanked", "RegionLatencyMarginCollapsed", "RegionLatencyMeasurementsUntrusted",
        "RegionLatencyExporterDown",
        "RegionLatencyExporterAbsent", "RegionLatencyConfigReloadFailed"]


# The labels each alert's series keeps, so its description can say where (and from where) it happened.
SCOPE = {
    "RegionLatencyHigh": ("region", "target", "instance"),
    "RegionLatencyAboveBaseline": ("region", "target", "instance"),
    "RegionLatencyFastestRegionChanged": ("region", "target", "instance"),
    "RegionLatencyRegionFailing": ("region", "target", "instance", "reason"),
    "RegionLatencyRegionStale": ("region", "target", "instance"),
    "RegionLatencyMarginCollapsed": ("region", "target", "instance"),
    "RegionLatencyRankingFlapping": ("target", "instance"),
    "RegionLatencyNoRegionRanked": ("target", "instance"),
    "RegionLatencyMeasurementsUntrusted": ("target", "instance", "region_a", "region_b", "reason"),
    "RegionLatencyExporterDown": ("instance",),
    "RegionLatencyConfigReloadFailed": ("instance",),
    "RegionLatencyExporterAbsent": (),
}


@pytest.mark.parametrize("rule", _rules("alert"), ids=lambda rule: rule["alert"])
def test_alert_has_summary_description_with_value_and_a_runbook(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{ $value" in annotations["description"]
    for label in SCOPE[rule["alert"]]:
        assert f"{{{{ $labels.{label} }}}}" in annotations["description"], f"description does not name the {label}"
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    anchor = annotations["runbook_url"].rsplit("#", 1)[1]
    assert anchor == rule["alert"].lower()
    assert re.search(rf"^## {rule['alert']}$", ALERTS_MD, re.M), f"docs/ALERTS.md has no runbook for {rule['alert']}"


def test_every_rule_reads_only_published_or_recorded_series() -> None:
    recorded = {rule["record"] for rule in _rules("record")}
    known = known_names(recorded)
    for rule in _rules("record") + _rules("alert"):
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule['record']} reads unknown series {unknown}"


def test_every_threshold_is_used_and_documented() -> None:
    thresholds = generate.load_thresholds()
    raw = yaml.safe_dump(generate.recording_groups() + generate.alert_groups())
    used = set(re.findall(r"<<(\w+)>>", raw))
    assert used == set(thresholds), f"unused: {set(thresholds) - used}, undefined: {used - set(thresholds)}"
    undocumented = [key for key in thresholds if f"`{key}`" not in ALERTS_MD]
    assert not undocumented, f"docs/ALERTS.md does not explain {undocumented}"


def test_every_alert_is_shown_firing_and_not_firing_by_promtool_tests() -> None:
    cases: dict[str, set[bool]] = {}
    for path in (REPO / "prometheus" / "tests").glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for rule in _rules("alert"):
        shown = cases.get(rule["alert"])
        assert shown == {True, False}, f"{rule['alert']}: promtool cases firing/not firing: {shown}"


def test_every_recording_rule_has_a_promtool_test() -> None:
    tested = set()
    for path in (REPO / "prometheus" / "tests").glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            tested |= {name for case in test.get("promql_expr_test", []) for name in metric_names(case["expr"])}
    untested = {rule["record"] for rule in _rules("record")} - tested
    assert untested <= {"target_region:region_latency_probes:rate",
                        "target_region_reason:region_latency_probe_failures:rate"}, untested  # feed the success ratio


def test_generate_overrides_reach_the_rules() -> None:
    rendered = generate.render(generate.load_thresholds(overrides={"failing_for": "7s", "latency_high_seconds": 0.25}))
    alerts = {rule["alert"]: rule for group in yaml.safe_load(rendered["region-latency-alerts.yml"])["groups"]
              for rule in group["rules"]}
    assert alerts["RegionLatencyRegionFailing"]["for"] == "7s"
    assert alerts["RegionLatencyHigh"]["expr"] == "region_latency_ema_seconds > 0.25"
    assert "above 0.25s" in alerts["RegionLatencyHigh"]["annotations"]["description"]


def test_generate_rejects_an_unknown_threshold_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--set", "latency_hgih_seconds=1", "--check"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == "generate.py: unknown threshold(s): latency_hgih_seconds"


def test_generate_check_fails_on_a_hand_edited_rule_file(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--out", str(tmp_path), "--check"]) == 0
    path = tmp_path / "region-latency-alerts.yml"
    path.write_text(path.read_text().replace("for: 10m", "for: 1m"))
    assert generate.main(["--out", str(tmp_path), "--check"]) == 1


def test_alertmanager_example_routes_to_defined_receivers_and_covers_every_severity() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    receivers = {receiver["name"] for receiver in config["receivers"]}
    routes = [config["route"], *config["route"]["routes"]]
    assert {route["receiver"] for route in routes} <= receivers
    alerts = [rule["alert"] for rule in _rules("alert")]
    matchers = [matcher for route in routes for matcher in route.get("matchers", [])]
    matchers += [matcher for rule in config["inhibit_rules"] for key in ("source_matchers", "target_matchers")
                 for matcher in rule[key]]
    for matcher in matchers:
        match = re.fullmatch(r'alertname(=~?)"(.+)"', matcher)
        if match:
            pattern = match.group(2) if match.group(1) == "=~" else re.escape(match.group(2))
            assert any(re.fullmatch(pattern, alert) for alert in alerts), f"{matcher} matches no alert"
