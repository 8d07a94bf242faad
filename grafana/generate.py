"""Writes the Grafana dashboards (grafana/dashboards/*.json) from plain Python data.

Dashboards are JSON nobody reviews by hand; here every panel is a short call that says its title, unit and
queries, and the conventions (datasource variable, units, stable uids, one selector per scope) are applied once.
A test keeps the committed JSON equal to this output, and the rules' integration test runs every query.

    python grafana/generate.py            # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if the committed files are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x; newer Grafana migrates it on load
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Label matchers per scope; every variable is multi-value with ".*" for All, so a missing label (no `vantage`
# on single-site setups) still matches.
EXPORTER = 'job=~"$job", vantage=~"$vantage", instance=~"$instance"'
TARGET = f'{EXPORTER}, service=~"$service", probe=~"$probe", target=~"$target"'
REGION = f'{TARGET}, region=~"$region"'
# Series aggregated over vantage points keep job and the target labels only.
ACROSS = 'job=~"$job", service=~"$service", probe=~"$probe", target=~"$target"'
ACROSS_REGION = f'{ACROSS}, region=~"$region"'


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    heatmap: bool = False

    def to_json(self, ref_id: str) -> dict[str, Any]:
        return {
            "datasource": DATASOURCE, "refId": ref_id, "expr": self.expr, "legendFormat": self.legend or "__auto",
            "range": not self.instant, "instant": self.instant,
            "format": "table" if self.table else "heatmap" if self.heatmap else "time_series",
        }


@dataclass
class Panel:
    kind: str
    title: str
    description: str
    unit: str
    queries: list[Query]
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    extra_defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str


def timeseries(title: str, description: str, unit: str, *queries: Query, stack: bool = False,
               width: int = 12, **defaults: Any) -> Panel:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    options = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return Panel("timeseries", title, description, unit, list(queries), width=width, options=options, custom=custom,
                 extra_defaults=defaults)


def stat(title: str, description: str, unit: str, *queries: Query, width: int = 6, **defaults: Any) -> Panel:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "textMode": "value_and_name",
               "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto"}
    return Panel("stat", title, description, unit, list(queries), width=width, height=5, options=options,
                 extra_defaults=defaults)


def table(title: str, description: str, unit: str, *queries: Query, width: int = 24, height: int = 9,
          overrides: Sequence[dict[str, Any]] = (), organize: dict[str, Any] | None = None) -> Panel:
    transformations: list[dict[str, Any]] = [{"id": "merge", "options": {}}]
    if organize:
        transformations.append({"id": "organize", "options": organize})
    return Panel("table", title, description, unit, list(queries), width=width, height=height,
                 options={"showHeader": True, "cellHeight": "sm"}, overrides=list(overrides),
                 transformations=transformations)


def column(name: str, **properties: Any) -> dict[str, Any]:
    """A table/series override by field name."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": key.replace("_", "."), "value": value} for key, value in properties.items()]}


def overview() -> tuple[str, str, list[Panel | Row]]:
    ranking_hidden = {"Time": True, "__name__": True, "job": True, "Value #E": True}
    ranking_names = {"Value #A": "Rank", "Value #B": "EMA", "Value #C": "Samples", "Value #D": "Last sample age"}
    return "region-latency-overview", "Region latency", [
        Row("Ranking"),
        table("Current ranking",
              "Every region of the selected targets: rank (1 = fastest, empty when not ranked), EMA, sample count,"
              " state and the age of its latest sample.", "s",
              Query(f"region_latency_rank{{{REGION}}}", instant=True, table=True),
              Query(f"region_latency_ema_seconds{{{REGION}}}", instant=True, table=True),
              Query(f"region_latency_samples{{{REGION}}}", instant=True, table=True),
              Query(f"time() - region_latency_last_sample_timestamp_seconds{{{REGION}}}", instant=True, table=True),
              Query(f"region_latency_region_state{{{REGION}}} == 1", instant=True, table=True),
              overrides=[column("Rank", unit="none"), column("Samples", unit="none")],
              organize={"excludeByName": ranking_hidden, "renameByName": ranking_names,
                        "indexByName": {"target": 0, "Rank": 1, "region": 2, "EMA": 3, "Samples": 4, "state": 5,
                                        "Last sample age": 6}}),
        stat("Fastest region", "The EMA of each target's #1 region, named in the legend.", "s",
             Query(f"target:region_latency_fastest_ema_seconds{{{TARGET}}}", "{{target}}: {{region}}", instant=True),
             width=8),
        stat("Best latency per service", "The lowest #1 EMA across targets of the same service and probe kind.",
             "s", Query(f'service:region_latency_best_ema_seconds:min{{{EXPORTER}, service=~"$service",'
                        f' probe=~"$probe"}}', "{{service}}/{{probe}}", instant=True), width=8),
        stat("#1 changes in the last hour", "How often the fastest region changed (RegionLatencyRankingFlapping).",
             "none", Query(f"sum without (region) (changes(target_region:region_latency_fastest:bool{{{TARGET}}}[1h])"
                           f" - resets(target_region:region_latency_fastest:bool{{{TARGET}}}[1h]))",
                           "{{target}}", instant=True), width=8),
        timeseries("Margin of #1 over #2", "EMA of #2 minus EMA of #1: how clearly the fastest region leads.", "s",
                   Query(f"region_latency_rank_margin_seconds{{{TARGET}}}", "{{target}}")),
        timeseries("Margin as a share of #1's EMA",
                   "The margin divided by #1's EMA (RegionLatencyMarginCollapsed fires below thresholds.yml's"
                   " margin_min_ratio).", "percentunit",
                   Query(f"target:region_latency_rank_margin:ratio{{{TARGET}}}", "{{target}} (#1 {{region}})")),
        Row("Latency"),
        timeseries("EMA per region", "The tracker's exponential moving average, per region.", "s",
                   Query(f"region_latency_ema_seconds{{{REGION}}}", "{{region}} {{target}}")),
        timeseries("EMA against its baseline",
                   "EMA divided by its median over thresholds.yml's baseline_window (RegionLatencyAboveBaseline).",
                   "percentunit",
                   Query(f"region_latency_ema_seconds{{{REGION}}}"
                         f" / target_region:region_latency_ema_seconds:baseline{{{REGION}}}", "{{region}} {{target}}")),
        timeseries("Raw-sample quantiles", "p50 / p90 / p99 of the raw samples (histogram), over the rate window.",
                   "s", Query(f"target_region:region_latency_sample_seconds:quantile{{{REGION}}}",
                              "{{region}} p{{quantile}}")),
        Panel("heatmap", "Raw-sample distribution", "Every raw latency sample, by histogram bucket.", "s",
              [Query(f"sum by (le) (rate(region_latency_sample_seconds_bucket{{{REGION}}}[$__rate_interval]))",
                     "{{le}}", heatmap=True)],
              options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                       "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64}}),
        timeseries("Phases of the latest probe",
                   "dns, connect, tls and ttfb of the latest probe, stacked (docs/PROBES.md).", "s",
                   Query(f'region_latency_probe_duration_seconds{{{REGION}, phase!="total"}}',
                         "{{region}} {{phase}}"), stack=True, width=24),
        Row("Health"),
        timeseries("Success ratio", "Successful probes / probes, over the rate window.", "percentunit",
                   Query(f"target_region:region_latency_probe_success:ratio{{{REGION}}}", "{{region}} {{target}}"),
                   min=0, max=1),
        timeseries("Failures by reason", "Failed probes per second, by reason (docs/METRICS.md).", "ops",
                   Query(f"sum by (target, region, reason) (target_region_reason:region_latency_probe_failures:rate"
                         f"{{{REGION}}})", "{{region}} {{reason}}"), stack=True),
        table("Failing and stale regions", "Regions out of the ranking because they fail or have no fresh sample.",
              "none",
              Query(f'region_latency_region_state{{{REGION}, state=~"failing|stale"}} == 1', instant=True, table=True),
              Query(f"region_latency_consecutive_failures{{{REGION}}} > 0", instant=True, table=True),
              width=12, height=8,
              organize={"excludeByName": {"Time": True, "__name__": True, "job": True, "Value #A": True},
                        "renameByName": {"Value #B": "Failures in a row"}}),
        timeseries("Samples", "The tracker's sample count per region (cached samples count).", "none",
                   Query(f"region_latency_samples{{{REGION}}}", "{{region}} {{target}}")),
        Row("Exporter"),
        timeseries("Probes per second", "Probes run by each exporter.", "ops",
                   Query(f"sum by (job, vantage, instance) (rate(region_latency_probes_total{{{EXPORTER}}}"
                         f"[$__rate_interval]))", "{{vantage}} {{instance}}"), width=8),
        timeseries("Scrape size", "Samples per scrape of each exporter.", "none",
                   Query(f"scrape_samples_scraped{{{EXPORTER}}}", "{{vantage}} {{instance}}"), width=8),
        timeseries("Scrape duration", "How long Prometheus' scrape of each exporter took.", "s",
                   Query(f"scrape_duration_seconds{{{EXPORTER}}}", "{{vantage}} {{instance}}"), width=8),
        timeseries("Resident memory", "Resident set size of each exporter process.", "bytes",
                   Query(f"process_resident_memory_bytes{{{EXPORTER}}}", "{{vantage}} {{instance}}"), width=8),
        timeseries("CPU", "CPU time per second of each exporter process (1 = one core).", "percentunit",
                   Query(f"rate(process_cpu_seconds_total{{{EXPORTER}}}[$__rate_interval])",
                         "{{vantage}} {{instance}}"), width=8),
        stat("Up", "Whether Prometheus' latest scrape of each exporter succeeded.", "none",
             Query(f"up{{{EXPORTER}}}", "{{vantage}} {{instance}}", instant=True), width=8,
             mappings=[{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                                     "1": {"text": "up", "color": "green"}}}]),
        stat("Last reload", "Whether each exporter's latest configuration reload succeeded.", "bool_yes_no",
             Query(f"region_latency_config_last_reload_successful{{{EXPORTER}}}", "{{vantage}} {{instance}}",
                   instant=True), width=8),
        stat("Configuration age", "Time since each exporter last loaded its configuration successfully.", "s",
             Query(f"time() - region_latency_config_last_reload_success_timestamp_seconds{{{EXPORTER}}}",
                   "{{vantage}} {{instance}}", instant=True), width=8),
        table("Build", "Version of each exporter and its Python and botocore.", "none",
              Query(f"region_latency_build_info{{{EXPORTER}}}", instant=True, table=True), width=8, height=5,
              organize={"excludeByName": {"Time": True, "__name__": True, "Value": True}}),
    ]


def vantage_points() -> tuple[str, str, list[Panel | Row]]:
    return "region-latency-vantage-points", "Region latency: vantage points", [
        Row("Across vantage points"),
        timeseries("EMA across vantage points", "Lowest, median and highest EMA of each region over the exporters.",
                   "s",
                   Query(f"target_region:region_latency_ema_seconds:min_over_vantage{{{ACROSS_REGION}}}",
                         "{{region}} min"),
                   Query(f"target_region:region_latency_ema_seconds:median_over_vantage{{{ACROSS_REGION}}}",
                         "{{region}} median"),
                   Query(f"target_region:region_latency_ema_seconds:max_over_vantage{{{ACROSS_REGION}}}",
                         "{{region}} max")),
        timeseries("Success ratio across vantage points", "Successful probes / probes, summed over the exporters.",
                   "percentunit",
                   Query(f"target_region:region_latency_probe_success:ratio_over_vantage{{{ACROSS_REGION}}}",
                         "{{region}} {{target}}"), min=0, max=1),
        stat("Vantage points ranking each region #1", "How many exporters see each region as the fastest.", "none",
             Query(f"target_region:region_latency_fastest:count_over_vantage{{{ACROSS}}}", "{{target}}: {{region}}",
                   instant=True), width=12),
        stat("Vantage points reporting", "Exporters that publish a ranking for each target.", "none",
             Query(f"target:region_latency_vantage_points:count{{{ACROSS}}}", "{{target}}", instant=True),
             width=12),
        Row("Per vantage point"),
        table("Fastest region per vantage point", "Each exporter's #1 region per target.", "none",
              Query(f'region_latency_ranking_info{{{TARGET}, rank="1"}}', instant=True, table=True),
              organize={"excludeByName": {"Time": True, "__name__": True, "Value": True, "job": True}}),
        timeseries("EMA per vantage point", "Each exporter's EMA of the selected regions.", "s",
                   Query(f"region_latency_ema_seconds{{{REGION}}}", "{{vantage}} {{instance}} {{region}}")),
        timeseries("Success ratio per vantage point", "Each exporter's success ratio of the selected regions.",
                   "percentunit",
                   Query(f"target_region:region_latency_probe_success:ratio{{{REGION}}}",
                         "{{vantage}} {{instance}} {{region}}"), min=0, max=1),
    ]


def variables() -> list[dict[str, Any]]:
    """Datasource, then job > vantage > instance > service > probe > target > region, each narrowing the next."""
    def query(name: str, label: str, promql: str) -> dict[str, Any]:
        return {"type": "query", "name": name, "label": label, "datasource": DATASOURCE, "query": promql,
                "definition": promql, "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "hide": 0,
                "regex": "", "options": []}

    return [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus", "hide": 0,
         "refresh": 1, "regex": "", "current": {}, "options": []},
        query("job", "Job", "label_values(region_latency_build_info, job)"),
        query("vantage", "Vantage point", 'label_values(region_latency_build_info{job=~"$job"}, vantage)'),
        query("instance", "Instance",
              'label_values(region_latency_build_info{job=~"$job", vantage=~"$vantage"}, instance)'),
        query("service", "Service", f"label_values(region_latency_target_regions{{{EXPORTER}}}, service)"),
        query("probe", "Probe",
              f'label_values(region_latency_target_regions{{{EXPORTER}, service=~"$service"}}, probe)'),
        query("target", "Target", f'label_values(region_latency_target_regions{{{EXPORTER}, service=~"$service",'
                                  f' probe=~"$probe"}}, target)'),
        query("region", "Region", f"label_values(region_latency_probes_total{{{TARGET}}}, region)"),
    ]


def dashboard(uid: str, title: str, items: Sequence[Panel | Row]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for number, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += row_height
            x = row_height = 0
            panels.append({"type": "row", "id": number, "title": item.title, "collapsed": False, "panels": [],
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            y += 1
            continue
        if x + item.width > 24:
            y += row_height
            x = row_height = 0
        panels.append(_panel_json(number, item, {"h": item.height, "w": item.width, "x": x, "y": y}))
        x += item.width
        row_height = max(row_height, item.height)
    return {
        "id": None, "uid": uid, "title": title, "tags": ["region-latency", "aws", "latency"],
        "description": "region-latency-exporter: per-region latency EMA, ranking and probe health (docs/METRICS.md)",
        "editable": True, "graphTooltip": 1, "timezone": "browser", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "fiscalYearStartMonth": 0, "liveNow": False,
        "templating": {"list": variables()},
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
             "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            {"datasource": DATASOURCE, "enable": True, "iconColor": "orange", "name": "Fastest region changed",
             "expr": 'ALERTS{alertname="RegionLatencyFastestRegionChanged", alertstate="firing",'
                     ' target=~"$target"}',
             "step": "1m", "titleFormat": "#1 is now {{region}}", "textFormat": "{{target}} from {{instance}}",
             "useValueForTime": False},
        ]},
        "links": [{"type": "dashboards", "tags": ["region-latency"], "asDropdown": False, "includeVars": True,
                   "keepTime": True, "title": "Region latency", "icon": "external link", "targetBlank": False}],
        "panels": panels,
    }


def _panel_json(number: int, panel: Panel, grid: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "color": {"mode": "palette-classic"},
                                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
                                **panel.extra_defaults}
    if panel.custom:
        defaults["custom"] = panel.custom
    refs = "ABCDEFGHIJ"
    return {
        "type": panel.kind, "id": number, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE, "gridPos": grid,
        "fieldConfig": {"defaults": defaults, "overrides": panel.overrides},
        "options": panel.options,
        "targets": [query.to_json(refs[index]) for index, query in enumerate(panel.queries)],
        **({"transformations": panel.transformations} if panel.transformations else {}),
    }


def render() -> dict[str, str]:
    """File name -> JSON text of each dashboard."""
    out = {}
    for uid, title, items in (overview(), vantage_points()):
        out[f"{uid}.json"] = json.dumps(dashboard(uid, title, items), indent=2) + "\n"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ from the output")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [name for name, text in rendered.items()
                 if not (args.out / name).is_file() or (args.out / name).read_text() != text]
        if stale:
            print(f"generate.py: out of date: {', '.join(stale)} (run python grafana/generate.py)", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
