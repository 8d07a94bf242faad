"""grafana/dashboards/*.json: the generator's output, valid Grafana JSON, and consistent with the metrics and the
recording rules (every panel has a unit, the datasource variable and queries on series that exist)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql_names import known_names, metric_names
from tests.support.repo_files import REPO, load

generate = load("grafana/generate.py")
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids these dashboards may use (Grafana's valueFormats: seconds, 0-1 as percent, per second, ...).
GRAFANA_UNITS = {"s", "ms", "percentunit", "ops", "bytes", "none", "short", "bool_yes_no"}
BUILT_IN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def _recorded() -> set[str]:
    names = set()
    for path in (REPO / "prometheus" / "rules").glob("*.yml"):
        names |= {rule["record"] for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
                  if "record" in rule}
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_committed_dashboards_are_the_generator_output() -> None:
    rendered = generate.render()
    assert sorted(rendered) == [path.name for path in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], f"{path.name} is stale: run python grafana/generate.py"


def test_uids_are_stable_and_name_the_files() -> None:
    uids = [_load(path)["uid"] for path in DASHBOARDS]
    assert uids == ["region-latency-overview", "region-latency-vantage-points"]
    assert [path.stem for path in DASHBOARDS] == uids
    assert all(len(uid) <= 40 for uid in uids)  # Grafana's limit


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_dashboard_follows_grafana_conventions(path: Path) -> None:
    dashboard = _load(path)
    assert dashboard["id"] is None  # importable anywhere: Grafana assigns the numeric id
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "vantage", "instance", "target", "service", "probe", "region"} <= set(variables)
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE
            assert re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]), variable["query"]
            assert variable["allValue"] == ".*"  # a label a setup lacks (vantage) still matches
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_every_panel_has_a_unit_the_datasource_variable_and_queries(path: Path) -> None:
    for panel in _panels(_load(path)):
        where = f"{path.name}: panel {panel['title']!r}"
        assert panel["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS, where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        assert panel["description"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in GRAFANA_UNITS, where


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_queries_read_known_series_and_defined_variables(path: Path) -> None:
    dashboard = _load(path)
    known = known_names(_recorded())
    defined = {variable["name"] for variable in dashboard["templating"]["list"]} | BUILT_IN_VARIABLES
    exprs = [(panel["title"], target["expr"]) for panel in _panels(dashboard) for target in panel["targets"]]
    exprs += [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    exprs += [(f"variable {v['name']}", re.sub(r"label_values\((.+), \w+\)", r"\1", v["query"]))
              for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for title, expr in exprs:
        unknown = metric_names(expr) - known
        assert not unknown, f"{path.name}: {title!r} reads unknown series {unknown}: {expr}"
        undefined = set(re.findall(r"\$(\w+)", expr)) - defined
        assert not undefined, f"{path.name}: {title!r} uses undefined variables {undefined}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _load(path)["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells


def test_the_overview_has_the_panels_the_issue_asks_for() -> None:
    overview = _load(REPO / "grafana" / "dashboards" / "region-latency-overview.json")
    titles = {panel["title"] for panel in _panels(overview)}
    assert {"Current ranking", "EMA per region", "Raw-sample quantiles", "Phases of the latest probe", "Success ratio",
            "Failures by reason", "Samples", "Fastest region", "Margin of #1 over #2", "Failing and stale regions",
            "Probes per second", "Scrape size", "Resident memory"} <= titles


def test_metric_name_extraction_finds_names_and_skips_functions_labels_and_numbers() -> None:
    expr = ('sum by (le) (rate(region_latency_sample_seconds_bucket{job=~"$job", le!="+Inf"}[5m])) / 1e3'
            " and on (target) up offset 5m > bool 0.5 unless absent(scrape_duration_seconds)")
    assert metric_names(expr) == {"region_latency_sample_seconds_bucket", "up", "scrape_duration_seconds"}


def test_provisioning_examples_point_at_a_prometheus_and_the_dashboards() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert [source["type"] for source in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((provisioning / "dashboards" / "region-latency.yml").read_text())
    assert providers["apiVersion"] == 1
    assert [provider["type"] for provider in providers["providers"]] == ["file"]
    assert providers["providers"][0]["options"]["path"] in (REPO / "grafana" / "README.md").read_text()
