"""Renders the Prometheus rule files from the one threshold block, prometheus/thresholds.yml.

Prometheus rule files have no variables, so a threshold or a `for:` used by several rules would otherwise be
repeated by hand. Here every value lives once in thresholds.yml, written into the rules as `<<key>>`; this script
writes prometheus/rules/*.yml (committed, so users who never run Python can copy them). A test keeps the
committed files equal to this output; integration tests render the same rules with a few values shortened.

    python prometheus/generate.py [--thresholds FILE] [--out DIR] [--set key=value ...] [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
THRESHOLDS = HERE / "thresholds.yml"
RULES_DIR = HERE / "rules"

# Recording rule names (level:metric:operations). Dashboards and alerts use these names.
FASTEST = "target_region:region_latency_fastest:bool"
FASTEST_EMA = "target:region_latency_fastest_ema_seconds"
SERVICE_BEST_EMA = "service:region_latency_best_ema_seconds:min"
MARGIN_RATIO = "target:region_latency_rank_margin:ratio"
SUCCESS_RATIO = "target_region:region_latency_probe_success:ratio"
PROBE_RATE = "target_region:region_latency_probes:rate"
FAILURE_RATE = "target_region_reason:region_latency_probe_failures:rate"
SAMPLE_QUANTILE = "target_region:region_latency_sample_seconds:quantile"
BASELINE = "target_region:region_latency_ema_seconds:baseline"
VANTAGE_MIN = "target_region:region_latency_ema_seconds:min_over_vantage"
VANTAGE_MEDIAN = "target_region:region_latency_ema_seconds:median_over_vantage"
VANTAGE_MAX = "target_region:region_latency_ema_seconds:max_over_vantage"
VANTAGE_FASTEST = "target_region:region_latency_fastest:count_over_vantage"
VANTAGE_POINTS = "target:region_latency_vantage_points:count"
VANTAGE_SUCCESS = "target_region:region_latency_probe_success:ratio_over_vantage"

QUANTILES = ("0.5", "0.9", "0.99")
_TOKEN = re.compile(r"<<(\w+)>>")


class ThresholdError(ValueError):
    """thresholds.yml (or an override) is missing a key, has an unknown one, or a value of the wrong shape."""


def load_thresholds(path: Path = THRESHOLDS, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """thresholds.yml with `overrides` applied; every key must already exist in the file."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ThresholdError(f"{path}: {error}".splitlines()[0]) from None
    if not isinstance(document, dict):
        raise ThresholdError(f"{path}: expected a mapping of threshold names to values")
    unknown = sorted(set(overrides or {}) - set(document))
    if unknown:
        raise ThresholdError(f"unknown threshold(s): {', '.join(unknown)}")
    thresholds = {**document, **(overrides or {})}
    if not isinstance(thresholds.get("vantage_labels"), list) or not thresholds["vantage_labels"]:
        raise ThresholdError("vantage_labels must be a non-empty list of label names")
    return thresholds


def fill(text: str, thresholds: Mapping[str, Any]) -> str:
    """`text` with every `<<key>>` replaced by the threshold's value."""
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in thresholds:
            raise ThresholdError(f"rules use <<{key}>>, which thresholds.yml does not define")
        item = thresholds[key]
        return ", ".join(map(str, item)) if isinstance(item, list) else str(item)

    return _TOKEN.sub(value, text)


def recording_groups() -> list[dict[str, Any]]:
    """Series the dashboards and alerts share; all keep the exporter's labels (job, instance, vantage…)."""
    per_exporter = [
        _record(FASTEST, "region_latency_rank == bool 1"),
        _record(FASTEST_EMA, "region_latency_ema_seconds and region_latency_rank == 1"),
        _record(SERVICE_BEST_EMA, f"min without (target, region) ({FASTEST_EMA})"),
        _record(MARGIN_RATIO,
                f"region_latency_rank_margin_seconds / ignoring (region) group_left (region) {FASTEST_EMA}"),
        _record(PROBE_RATE, "rate(region_latency_probes_total[<<rate_window>>])"),
        _record(FAILURE_RATE, "rate(region_latency_probe_failures_total[<<rate_window>>])"),
        _record(SUCCESS_RATIO, f"1 - ((sum without (reason) ({FAILURE_RATE}) or {PROBE_RATE} * 0) / {PROBE_RATE})"),
        *(_record(SAMPLE_QUANTILE,
                  f"histogram_quantile({q}, rate(region_latency_sample_seconds_bucket[<<rate_window>>]))",
                  {"quantile": q}) for q in QUANTILES),
    ]
    baseline = [_record(BASELINE, "quantile_over_time(0.5, region_latency_ema_seconds[<<baseline_window>>])")]
    vantage = "without (<<vantage_labels>>)"
    over_vantage = [
        _record(VANTAGE_MIN, f"min {vantage} (region_latency_ema_seconds)"),
        _record(VANTAGE_MEDIAN, f"quantile {vantage} (0.5, region_latency_ema_seconds)"),
        _record(VANTAGE_MAX, f"max {vantage} (region_latency_ema_seconds)"),
        _record(VANTAGE_FASTEST, f"sum {vantage} ({FASTEST})"),
        _record(VANTAGE_POINTS, f"count {vantage} (region_latency_ranked_regions)"),
        _record(VANTAGE_SUCCESS,
                f"1 - ((sum without (<<vantage_labels>>, reason) ({FAILURE_RATE}) or sum {vantage} ({PROBE_RATE}) * 0)"
                f" / sum {vantage} ({PROBE_RATE}))"),
    ]
    return [
        {"name": "region-latency.recording", "rules": per_exporter},
        {"name": "region-latency.baseline", "interval": "<<baseline_evaluation_interval>>", "rules": baseline},
        {"name": "region-latency.vantage-points", "rules": over_vantage},
    ]


def alert_groups() -> list[dict[str, Any]]:
    """Every alert: summary, description (region, target, value) and a runbook anchor in docs/ALERTS.md."""
    where = "{{ $labels.target }} ({{ $labels.service }}/{{ $labels.probe }}) in {{ $labels.region }}"
    seen_from = "seen from {{ $labels.instance }}"
    alerts = [
        _alert("RegionLatencyHigh", "region_latency_ema_seconds > <<latency_high_seconds>>",
               "<<latency_high_for>>", "warning",
               "{{ $labels.region }} is slow for {{ $labels.target }}",
               f"The latency EMA of {where} is {{{{ $value | humanizeDuration }}}}, above <<latency_high_seconds>>s"
               f" ({seen_from})."),
        _alert("RegionLatencyAboveBaseline",
               f"(region_latency_ema_seconds / {BASELINE} > <<baseline_ratio>>)\n"
               f"and (region_latency_ema_seconds - {BASELINE} > <<baseline_min_increase_seconds>>)",
               "<<baseline_for>>", "warning",
               "{{ $labels.region }} is slower than usual for {{ $labels.target }}",
               f"The latency EMA of {where} is {{{{ $value | printf \"%.1f\" }}}} times its median over"
               f" <<baseline_window>>, and more than <<baseline_min_increase_seconds>>s above it ({seen_from})."),
        _alert("RegionLatencyFastestRegionChanged",
               f"changes({FASTEST}[<<fastest_changed_window>>]) > 0\nand {FASTEST} == 1",
               None, "info",
               "{{ $labels.region }} is now the fastest region for {{ $labels.target }}",
               f"{{{{ $labels.region }}}} became #1 of {{{{ $labels.target }}}} ({{{{ $labels.service }}}}/"
               f"{{{{ $labels.probe }}}}) within the last <<fastest_changed_window>>; its #1 flag changed"
               f" {{{{ $value }}}} time(s) ({seen_from})."),
        _alert("RegionLatencyRankingFlapping",
               f"sum without (region) (\n  changes({FASTEST}[<<flapping_window>>])\n"
               f"  - resets({FASTEST}[<<flapping_window>>])\n) > <<flapping_max_changes>>",
               None, "warning",
               "The fastest region of {{ $labels.target }} keeps changing",
               "The fastest region of {{ $labels.target }} ({{ $labels.service }}/{{ $labels.probe }}) changed"
               f" {{{{ $value }}}} times in <<flapping_window>> (more than <<flapping_max_changes>>; {seen_from})."),
        _alert("RegionLatencyRegionFailing",
               "(region_latency_consecutive_failures >= <<failing_consecutive_failures>>)\n"
               "+ ignoring (reason) group_right ()\n"
               "(0 * (increase(region_latency_probe_failures_total[<<failing_window>>]) > 0))",
               "<<failing_for>>", "warning",
               "{{ $labels.region }} is failing for {{ $labels.target }} ({{ $labels.reason }})",
               f"The last {{{{ $value }}}} probes of {where} failed; reason {{{{ $labels.reason }}}} was seen in"
               f" the last <<failing_window>> ({seen_from})."),
        _alert("RegionLatencyRegionStale",
               "(time() - region_latency_last_sample_timestamp_seconds)\n"
               "and ignoring (state) region_latency_region_state{state=\"stale\"} == 1",
               "<<stale_for>>", "warning",
               "{{ $labels.region }} has no fresh sample for {{ $labels.target }}",
               f"The latest sample of {where} is {{{{ $value | humanizeDuration }}}} old, older than the ranking's"
               f" ttl: the region is stale and out of the ranking ({seen_from})."),
        _alert("RegionLatencyNoRegionRanked",
               "region_latency_ranked_regions == 0\nand region_latency_target_regions > 0",
               "<<no_region_ranked_for>>", "critical",
               "No region is ranked for {{ $labels.target }}",
               "{{ $labels.target }} ({{ $labels.service }}/{{ $labels.probe }}) probes regions but ranks none"
               f" of them: every region is failing, stale or unmeasured; value {{{{ $value }}}} ({seen_from})."),
        _alert("RegionLatencyMarginCollapsed", f"{MARGIN_RATIO} < <<margin_min_ratio>>",
               "<<margin_collapsed_for>>", "info",
               "The fastest region of {{ $labels.target }} barely leads",
               "#1 of {{ $labels.target }} ({{ $labels.region }}) leads #2 by only"
               " {{ $value | humanizePercentage }} of its EMA (less than <<margin_min_ratio>>); #1 may change soon"
               f" ({seen_from})."),
        _alert("RegionLatencyMeasurementsUntrusted", "region_latency_measurements_untrusted == 1",
               "<<untrusted_for>>", "warning",
               "The latencies of {{ $labels.target }} cannot be the regions'",
               "The latency EMAs of {{ $labels.region_a }} and {{ $labels.region_b }} for {{ $labels.target }}"
               " ({{ $labels.service }}/{{ $labels.probe }}) sum to less than light in fibre needs between the two"
               " regions ({{ $labels.reason }}): something near the exporter answers for them (an HTTPS proxy, a"
               " NAT or load balancer that terminates TCP, a VPN); the ranking is not the regions' (flag"
               f" {{{{ $value }}}}; /regions has the measured sum and the bound; {seen_from})."),
        _alert("RegionLatencyExporterDown", "up{job=~\"<<job_regex>>\"} == 0",
               "<<exporter_down_for>>", "critical",
               "region-latency-exporter {{ $labels.instance }} is down",
               "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}): up is {{ $value }}."
               " Its regions, targets and rankings are not measured from there."),
        _alert("RegionLatencyExporterAbsent", "absent(up{job=~\"<<job_regex>>\"})",
               "<<exporter_absent_for>>", "critical",
               "No region-latency-exporter is scraped",
               "Prometheus has no scrape target in a job matching <<job_regex>> (value {{ $value }}): no region,"
               " target or ranking is measured."),
        _alert("RegionLatencyConfigReloadFailed",
               "(time() - region_latency_config_last_reload_success_timestamp_seconds)\n"
               "and region_latency_config_last_reload_successful == 0",
               "<<reload_failed_for>>", "warning",
               "region-latency-exporter {{ $labels.instance }} failed to reload its configuration",
               "The last configuration reload of {{ $labels.instance }} failed; it still runs the configuration"
               " loaded {{ $value | humanizeDuration }} ago, for every target and region."),
    ]
    return [{"name": "region-latency.alerts", "rules": alerts}]


def alert_names() -> list[str]:
    return [rule["alert"] for group in alert_groups() for rule in group["rules"]]


def recording_names() -> list[str]:
    return sorted({rule["record"] for group in recording_groups() for rule in group["rules"]})


def render(thresholds: Mapping[str, Any]) -> dict[str, str]:
    """File name -> the rule file's text."""
    files = {"region-latency-recording.yml": recording_groups(), "region-latency-alerts.yml": alert_groups()}
    header = ("# Generated by prometheus/generate.py from prometheus/thresholds.yml: edit those, not this file.\n"
              "# Runbooks: docs/ALERTS.md.\n")
    return {name: header + _dump(_fill_all({"groups": groups}, thresholds)) for name, groups in files.items()}


def write(out: Path, thresholds: Mapping[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render(thresholds).items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS)
    parser.add_argument("--out", type=Path, default=RULES_DIR)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one threshold (YAML value), e.g. --set failing_for=0s")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out differ from the output")
    args = parser.parse_args(argv)
    try:
        overrides = dict(_parse_override(item) for item in args.set)
        thresholds = load_thresholds(args.thresholds, overrides)
        rendered = render(thresholds)
    except ThresholdError as error:
        print(f"generate.py: {error}", file=sys.stderr)
        return 2
    if args.check:
        stale = [name for name, text in rendered.items()
                 if not (args.out / name).is_file() or (args.out / name).read_text() != text]
        if stale:
            print(f"generate.py: out of date: {', '.join(stale)} (run python prometheus/generate.py)", file=sys.stderr)
            return 1
        return 0
    for path in write(args.out, thresholds):
        print(path)
    return 0


def _record(name: str, expr: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"record": name, "expr": expr, **({"labels": dict(labels)} if labels else {})}


def _alert(name: str, expr: str, for_: str | None, severity: str, summary: str, description: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ is not None:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": f"<<runbook_base_url>>#{name.lower()}"}
    return rule


def _fill_all(node: Any, thresholds: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return fill(node, thresholds)
    if isinstance(node, list):
        return [_fill_all(item, thresholds) for item in node]
    if isinstance(node, dict):
        return {key: _fill_all(value, thresholds) for key, value in node.items()}
    return node


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ThresholdError(f"--set expects KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line expressions, so the rule files read like hand-written ones."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)


if __name__ == "__main__":
    sys.exit(main())
