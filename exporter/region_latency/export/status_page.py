"""The status page at `/`: what an on-call engineer opens first.

Per target, the ranking as a table (rank, region, EMA, samples, state, last sample age, last error) with a chart
of each region's recent samples and EMA (inline SVG drawn here, export/svg.py); then the recent probes, failed
and slowest first. No script and no external asset: a meta refresh reloads it, and it reads the same without
JavaScript, at 400 px wide (wide tables scroll inside their own box) and with a screen reader (real tables with
header cells, state in words, charts with a text alternative).

Every name shown (target, service, probe kind, region, error text) is escaped: they come from the configuration
and from the network, never from us.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

from region_latency._version import __version__
from region_latency.export.svg import latency_chart
from region_latency.ranking import RankedRegion, RegionState
from region_latency.recent import RecentProbe, RecentProbes
from region_latency.state import TargetSnapshot

REFRESH_SECONDS = 10
LATEST_SHOWN = 40
SLOWEST_SHOWN = 10
FAILED_SHOWN = 20
PHASES = ("dns", "connect", "tls", "ttfb", "total")

_STATE_MARKS = {  # a mark beside the word: the word carries the meaning, the colour and mark only help
    RegionState.HEALTHY: "\u25cf",  # ●
    RegionState.FAILING: "\u2716",  # ✖
    RegionState.STALE: "\u25f7",  # ◷
    RegionState.UNMEASURED: "\u2013",  # en dash
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1em;line-height:1.35;color:#1f2328}"
    "h1,h2,p{overflow-wrap:anywhere}h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.4em}"
    "caption.h3{font-size:1.05em;margin-top:.8em}"
    ".meta{color:#424a53}.scroll{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;margin:.4em 0}caption{text-align:left;font-weight:600;padding:.2em 0}"
    "td,th{padding:.25em .6em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:middle}"
    "thead th{background:#f6f8fa;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.num,td.when,td.state,td.name,td.outcome,tbody th{white-space:nowrap}"
    "td.error{min-width:12em;overflow-wrap:anywhere}"
    ".healthy{color:#1a7f37}.failing{color:#cf222e;font-weight:600}.stale{color:#9a6700}.unmeasured{color:#6e7781}"
    "tr.failed{background:#ffebe9}tr.slow{background:#fff8c5}.note{color:#57606a;font-size:.9em}"
    ".mark{font-weight:600}svg.chart{display:block}"
    "@media (max-width:600px){body{margin:.5em}td,th{padding:.2em .35em}}"
)


class ReloadState(Protocol):
    """The configuration's reload state as the exporter reports it (the shape of lifecycle's ReloadStatus)."""

    @property
    def last_successful(self) -> bool: ...  # the latest (re)load succeeded

    @property
    def last_success_at(self) -> float: ...  # Unix time of the latest successful (re)load; the start counts

    @property
    def reloads(self) -> int: ...  # reloads run since the start


@dataclass(frozen=True, slots=True)
class LastReload:
    """A ReloadState of our own (tests, and wiring that has only these three facts)."""

    last_successful: bool
    last_success_at: float
    reloads: int = 0


def render_index(snapshots: Sequence[TargetSnapshot], ready: bool, *, recent: RecentProbes | None = None,
                 last_reload: ReloadState | None = None, now: float | None = None,
                 refresh: int = REFRESH_SECONDS, metrics_path: str = "/metrics") -> bytes:
    """The whole page, as UTF-8. `recent` feeds the charts and the recent-probes tables (none: left out)."""
    now = time.time() if now is None else now
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta http-equiv='refresh' content='{int(refresh)}'>" if refresh > 0 else "",
        f"<title>region-latency-exporter</title><style>{_STYLE}</style></head><body>",
        "<header><h1>region-latency-exporter</h1>",
        f"<p class='meta'>version {_e(__version__)} &middot; {'ready' if ready else 'not ready yet'} &middot; "
        f"{_reload_text(last_reload, now)} &middot; generated {_clock(now)} UTC"
        + (f", refreshes every {int(refresh)} s" if refresh > 0 else "") + "</p>",
        f"<nav><p><a href='{_e(metrics_path)}'>Metrics</a> &middot; <a href='/regions'>Regions (JSON)</a> &middot; "
        "<a href='/-/healthy'>Health</a> &middot; <a href='/-/ready'>Readiness</a> &middot; "
        "<a href='#recent'>Recent probes</a></p></nav></header><main>",
    ]
    for snap in snapshots:
        parts.extend(_target_section(snap, recent, now))
    if not snapshots:
        parts.append("<p>No targets configured.</p>")
    if recent is not None:
        parts.extend(_recent_section(recent.listing(), now))
    parts.append("</main></body></html>\n")
    return "".join(parts).encode()


# -- per target ---------------------------------------------------------------------------------------


def _target_section(snap: TargetSnapshot, recent: RecentProbes | None, now: float) -> list[str]:
    info = snap.info
    entries = snap.ranking.entries
    counts = {state: sum(1 for e in entries if e.state is state) for state in RegionState}
    fastest = snap.ranking.ranked()[0] if snap.ranking.ranked() else None
    summary = (f"fastest: <strong>{_e(fastest.region)}</strong> ({_ms(fastest.ema)})" if fastest
               else "no region ranked yet")
    summary += " &middot; " + ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
    head = ["Rank", "Region", "EMA", "Samples", "State", "Last sample", "Last error"]
    if recent is not None:
        head.append(f"Last {recent.per_region} probes")
    family = f", {_e(info.ip_family)}" if info.ip_family else ""  # one section per family of ip_families
    anchor = info.key
    parts = [
        f"<section><h2 id='{_e(anchor)}'>{_e(info.name)} "
        f"<small>({_e(info.service)}, {_e(info.probe)} probe{family})</small></h2>",
        f"<p>{summary}</p>",
        *_untrusted_line(snap),
        "<div class='scroll'><table class='ranking'>",
        f"<caption>Regions of {_e(info.name)}, fastest first</caption>",
        "<thead><tr>" + "".join(f"<th scope='col'>{h}</th>" for h in head) + "</tr></thead><tbody>",
    ]
    for entry in entries:
        parts.append(_ranking_row(snap, entry, recent, now))
    parts.append("</tbody></table></div>")
    if recent is not None:
        parts.append("<p class='note'>Charts: solid blue line, the measured latency of each probe; dashed purple "
                     "line, the EMA after it; red cross, a failed probe. Hover or focus a chart for its numbers."
                     "</p>")
    parts.append("</section>")
    return parts


def _untrusted_line(snap: TargetSnapshot) -> list[str]:
    """A warning when the target's round trips cannot be real (region_latency.trust); nothing otherwise."""
    violation = snap.trust.violation
    if violation is None:
        return []
    return [f"<p class='untrusted' role='alert'><strong>Measurements untrusted:</strong> {_e(violation.region_a)} "
            f"and {_e(violation.region_b)} sum to {_ms(violation.measured)}, less than light in fibre needs "
            f"between them ({_ms(violation.bound)}): something near the exporter (a proxy, a NAT that terminates "
            f"TCP, a VPN) answers for the regions.</p>"]


def _ranking_row(snap: TargetSnapshot, entry: RankedRegion, recent: RecentProbes | None, now: float) -> str:
    region = entry.region
    stats = snap.tracker.regions.get(region)
    last = snap.last_probe.get(region)
    error = "" if last is None or last.success else _e(f"{last.error}: {last.detail}")
    age = "never" if stats is None or stats.last_sample_at is None else _age(now - stats.last_sample_at)
    debug = _e("/probe?" + urlencode({"target": snap.info.key, "region": region, "debug": "true"}))
    cells = [
        f"<tr data-region='{_e(region)}' class='{entry.state.value}-row'>",
        f"<td class='num'>{entry.rank or '&ndash;'}</td>",
        f"<th scope='row'>{_e(region)} <a class='note' href='{debug}' "
        f"aria-label='probe {_e(region)} now (debug view)'>probe&nbsp;now</a></th>",
        f"<td class='num'>{_ms(entry.ema)}</td><td class='num'>{entry.samples}</td>",
        f"<td class='state {entry.state.value}'><span aria-hidden='true'>{_STATE_MARKS[entry.state]}</span> "
        f"{entry.state.value}</td>",
        f"<td class='when'>{age}</td><td class='error'>{error}</td>",
    ]
    if recent is not None:
        cells.append(f"<td>{latency_chart(recent.series(snap.info.key, region), f'{snap.info.key} {region}')}</td>")
    cells.append("</tr>")
    return "".join(cells)


# -- recent probes ------------------------------------------------------------------------------------


def _recent_section(listing: Sequence[RecentProbe], now: float) -> list[str]:
    parts = [f"<section><h2 id='recent'>Recent probes</h2><p class='note'>The last {len(listing)} probe "
             "results of every target, kept in memory (lost at restart).</p>"]
    failed = [p for p in listing if not p.ok][:FAILED_SHOWN]
    answered = sorted((p for p in listing if p.ok), key=lambda p: p.latency or 0.0, reverse=True)
    slowest = answered[:SLOWEST_SHOWN]
    slow_ids = {id(p) for p in answered[:max(1, len(answered) // 10)]}  # the slowest tenth: marked "slow"
    if failed:
        parts.extend(_probe_table(f"Failed: {len(failed)}, newest first", failed, now, slow_ids))
    else:
        parts.append("<p><strong>Failed: none</strong> among them.</p>")
    parts.extend(_probe_table(f"Slowest {len(slowest)}, slowest first", slowest, now, slow_ids))
    parts.extend(_probe_table(f"Latest {min(LATEST_SHOWN, len(listing))}, newest first", listing[:LATEST_SHOWN],
                              now, slow_ids))
    parts.append("</section>")
    return parts


def _probe_table(title: str, probes: Iterable[RecentProbe], now: float, slow_ids: set[int]) -> list[str]:
    head = ["Time (UTC)", "Target", "Region", "Outcome", "Latency", "Error", *PHASES]
    parts = [
        "<div class='scroll'><table class='probes'>",
        f"<caption class='h3'>{_e(title)} <span class='note'>(phase timings in milliseconds)</span></caption>",
        "<thead><tr>" + "".join(f"<th scope='col'>{h}</th>" for h in head) + "</tr></thead><tbody>",
    ]
    rows = 0
    for probe in probes:
        rows += 1
        if not probe.ok:
            row_class, outcome = "failed", f"<span class='failing'>\u2716 FAILED</span> ({_e(probe.error or '')})"
        elif id(probe) in slow_ids:
            row_class, outcome = "slow", "<span class='mark'>\u25b2 slow</span>"
        else:
            row_class, outcome = "", "ok"
        if probe.status is not None:
            outcome += f" HTTP {probe.status}"
        error = "" if probe.ok else _e(probe.detail)
        phases = "".join(f"<td class='num'>{_ms(probe.phases.get(name), unit=False)}</td>" for name in PHASES)
        parts.append(
            f"<tr class='{row_class}'><td class='when'>{_clock(probe.at)} "
            f"<span class='note'>({_age(now - probe.at)})</span></td>"
            f"<td class='name'>{_e(probe.target)}</td><th scope='row'>{_e(probe.region)}</th>"
            f"<td class='outcome'>{outcome}</td>"
            f"<td class='num'>{_ms(probe.latency)}</td><td class='error'>{error}</td>{phases}</tr>")
    if not rows:
        parts.append(f"<tr><td colspan='{len(head)}'>none yet</td></tr>")
    parts.append("</tbody></table></div>")
    return parts


# -- formatting ---------------------------------------------------------------------------------------


def _reload_text(last_reload: ReloadState | None, now: float) -> str:
    if last_reload is None:
        return "config reload status: not reported"
    loaded = _age(now - last_reload.last_success_at)
    count = f"{last_reload.reloads} reload{'' if last_reload.reloads == 1 else 's'} since start"
    if last_reload.last_successful:
        return f"config: last (re)load succeeded, {loaded}; {count}"
    return (f"<strong class='failing'>config: last reload FAILED</strong> (still running the configuration loaded "
            f"{loaded}; the log says why); {count}")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _ms(seconds: float | None, unit: bool = True) -> str:
    if seconds is None:
        return "&ndash;"
    return f"{seconds * 1000:.1f}{' ms' if unit else ''}"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))
