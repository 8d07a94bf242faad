"""The status page at `/`: links, and each target's ranking as a table a person can read.

Every name shown (target, service, probe kind, region, error text) is escaped: they come from the configuration
and from the network, never from us.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from region_latency._version import __version__
from region_latency.state import TargetSnapshot

_HEAD = (
    "<!doctype html><html><head><meta charset='utf-8'><title>region-latency-exporter</title>"
    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}"
    ".healthy{color:#1a7f37}.failing{color:#cf222e}.stale{color:#9a6700}.unmeasured{color:#6e7781}</style>"
    "</head><body><h1>region-latency-exporter</h1>"
)
_LINKS = ("<p><a href='/metrics'>Metrics</a> &middot; <a href='/regions'>Regions (JSON)</a> &middot; "
          "<a href='/-/healthy'>Health</a> &middot; <a href='/-/ready'>Readiness</a></p>")


def render_index(snapshots: Sequence[TargetSnapshot], ready: bool) -> bytes:
    """The whole page, as UTF-8."""
    parts = [
        _HEAD,
        f"<p>version {html.escape(__version__)} &middot; {'ready' if ready else 'not ready yet'}</p>",
        _LINKS,
    ]
    for snap in snapshots:
        parts.extend(_target_table(snap))
    parts.append("</body></html>\n")
    return "".join(parts).encode()


def _target_table(snap: TargetSnapshot) -> list[str]:
    info = snap.info
    parts = [
        f"<h2 id='{html.escape(info.name)}'>{html.escape(info.name)} "
        f"<small>({html.escape(info.service)}, {html.escape(info.probe)} probe)</small></h2>",
        "<table><tr><th>Rank</th><th>Region</th><th>EMA</th><th>Samples</th><th>State</th><th>Last error</th></tr>",
    ]
    for entry in snap.ranking.entries:
        last = snap.last_probe.get(entry.region)
        ema = "" if entry.ema is None else f"{entry.ema * 1000:.1f} ms"
        error = "" if last is None or last.success else html.escape(f"{last.error}: {last.detail}")
        parts.append(
            f"<tr><td>{entry.rank or ''}</td><td>{html.escape(entry.region)}</td><td>{ema}</td>"
            f"<td>{entry.samples}</td><td class='{entry.state.value}'>{entry.state.value}</td>"
            f"<td>{error}</td></tr>")
    parts.append("</table>")
    return parts
