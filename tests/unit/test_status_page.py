"""The status page, its charts and its ring of recent results.

The page escapes every name it shows (a target, service, region or error text is text, never markup), is a real
table with header cells in the ranking's order, says a region's state in words, and lists failed and slowest
probes where they are easy to find. The charts draw a bounded number of points, escape their label and cope with
no data. The ring keeps at most `per_region` samples per series, `max_series` series and `listing` results.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from region_latency import __version__
from region_latency.export.status_page import LastReload, render_index
from region_latency.export.svg import latency_chart, reduce_points
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.recent import BYTES_PER_SAMPLE, RecentProbes, Sample
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "nav", "main", "section", "h1", "h2",
             "h3", "p", "a", "small", "strong", "span", "div", "table", "caption", "thead", "tbody", "tr", "th", "td",
             "svg", "line", "polyline", "path", "text"}
NAME = "\"'><script>alert('target')</script>"
SERVICE = "s3&<i>svc</i>"
PROBE = "<u>tcp</u>"
REGION = "<b onclick='x'>eu-west-1</b>"
DETAIL = "<img src=x onerror=alert(1)> & \"quoted\""
SVG = "{http://www.w3.org/2000/svg}"


class Page(HTMLParser):
    """Every tag (with its attributes), the text of every element, and the rows of every table."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.tables: list[tuple[str, list[list[str]]]] = []  # (class, rows of cell texts)
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(body: bytes) -> Page:
    parser = Page()
    parser.feed(body.decode())
    parser.close()
    return parser


def hostile_state() -> TargetState:
    state = TargetState(TargetInfo(NAME, SERVICE, PROBE), [REGION, "us-east-1"], RegionLatencyTracker(),
                        PlainRanking(), clock=lambda: 1000.0)
    return state


def page(recent: RecentProbes | None = None) -> Page:
    state = hostile_state()
    results = {"us-east-1": ProbeResult(0.02, {"connect": 0.02}), REGION: ProbeResult.failure(ErrorKind.TLS, DETAIL)}
    for region, result in results.items():
        state.record(region, result)
        if recent is not None:
            recent.add(NAME, region, 1000.0, result, state.tracker.get_latency(region))
    return parse(render_index([state.snapshot()], ready=True, recent=recent, now=1005.0))


@pytest.mark.parametrize("with_recent", [False, True], ids=["no-ring", "ring"])
def test_names_and_errors_are_text_not_markup(with_recent: bool) -> None:
    parsed = page(RecentProbes() if with_recent else None)
    assert {tag for tag, _ in parsed.tags} <= PAGE_TAGS
    text = "".join(parsed.text)
    for shown in (NAME, SERVICE, PROBE, REGION, f"tls: {DETAIL}"):
        assert shown in text
    assert not [attrs for tag, attrs in parsed.tags if any(name.startswith("on") for name, _ in attrs)]


def test_the_target_anchor_is_one_attribute_holding_the_name() -> None:
    headings = [attrs for tag, attrs in page().tags if tag == "h2"]
    assert headings == [[("id", NAME)]]


def test_the_debug_link_carries_the_names_url_encoded() -> None:
    links = [dict(attrs)["href"] for tag, attrs in page().tags if tag == "a"]
    assert "/probe?target=%22%27%3E%3Cscript%3Ealert%28%27target%27%29%3C%2Fscript%3E&region=us-east-1&debug=true" \
        in links


def ranked_state(clock: list[float]) -> TargetState:
    state = TargetState(TargetInfo("t", "s3", "https"), ["slow-1", "fast-1", "dead-1", "new-1"],
                        RegionLatencyTracker(clock=lambda: clock[0]), PlainRanking(), clock=lambda: clock[0])
    state.record("slow-1", ProbeResult(0.300, {"connect": 0.1, "ttfb": 0.3}, status=200))
    state.record("fast-1", ProbeResult(0.010, {"connect": 0.004, "ttfb": 0.010}, status=200))
    state.record("dead-1", ProbeResult(0.050, {"connect": 0.05}))
    state.record("dead-1", ProbeResult.failure(ErrorKind.REFUSED, "connect refused"))
    return state


def test_the_ranking_is_a_real_table_in_published_order_with_state_in_words() -> None:
    clock = [1000.0]
    state = ranked_state(clock)
    snap = state.snapshot()
    parsed = parse(render_index([snap], ready=True, now=1012.0))
    (rows,) = [rows for css, rows in parsed.tables if css == "ranking"]
    header, *body = rows
    assert header == ["Rank", "Region", "EMA", "Samples", "State", "Last sample", "Last error"]
    assert [row[1].split()[0] for row in body] == snap.ranking.order()
    by_region = {row[1].split()[0]: row for row in body}
    assert by_region["fast-1"][0] == "1" and by_region["fast-1"][2] == "10.0 ms"
    assert by_region["fast-1"][4].endswith("healthy") and by_region["fast-1"][5] == "12 s ago"
    assert by_region["dead-1"][4].endswith("failing") and by_region["dead-1"][6] == "refused: connect refused"
    assert by_region["new-1"][4].endswith("unmeasured") and by_region["new-1"][5] == "never"
    scopes = [dict(attrs).get("scope") for tag, attrs in parsed.tags if tag == "th"]
    assert scopes.count("col") == 7 and scopes.count("row") == 4


def test_recent_probes_put_failed_and_slowest_first_in_words() -> None:
    clock = [1000.0]
    state = ranked_state(clock)
    recent = RecentProbes()
    for i in range(30):
        clock[0] = 1000.0 + i
        latency = 0.010 + i * 0.001
        result = ProbeResult(latency, {"ttfb": latency}, status=200) if i != 7 else \
            ProbeResult.failure(ErrorKind.TIMEOUT, "no answer within 1s (during TLS handshake)")
        recent.add("t", "fast-1", clock[0], result, state.tracker.get_latency("fast-1"))
    parsed = parse(render_index([state.snapshot()], ready=True, recent=recent, now=1030.0))
    tables = [rows for css, rows in parsed.tables if css == "probes"]
    failed, slowest, latest = tables
    assert len(failed) == 2 and "FAILED (timeout)" in failed[1][3] and "during TLS handshake" in failed[1][5]
    latencies = [float(row[4].split()[0]) for row in slowest[1:]]
    assert latencies == sorted(latencies, reverse=True) and latencies[0] == pytest.approx(39.0)
    assert ["slow" in row[3] for row in slowest[1:]] == [True] * 2 + [False] * 8  # the slowest tenth, in words
    assert ["slow" in row[3] for row in latest[1:4]] == [True, True, False]
    assert [row[0].split()[0] for row in latest[1:3]] == ["00:17:09", "00:17:08"]  # newest first (1029, 1028)
    assert sum("FAILED" in row[3] for row in latest[1:]) == 1


def test_meta_refresh_version_and_reload_result_are_shown() -> None:
    body = render_index([], ready=False, last_reload=LastReload(False, 700.0, reloads=3), now=1000.0)
    text = body.decode()
    assert re.search(r"<meta http-equiv='refresh' content='10'>", text)
    assert f"version {__version__} &middot; not ready yet" in text
    assert "config: last reload FAILED</strong> (still running the configuration loaded 5 min ago" in text
    assert "3 reloads since start" in text
    assert "config: last (re)load succeeded, 0 s ago; 1 reload since start" in render_index(
        [], ready=True, last_reload=LastReload(True, 1000.0, reloads=1), now=1000.0).decode()
    assert "config reload status: not reported" in render_index([], ready=True).decode()
    assert "http-equiv" not in render_index([], ready=True, refresh=0).decode()


def test_the_metrics_link_follows_the_telemetry_path() -> None:
    assert "<a href='/metrics'>Metrics</a>" in render_index([], ready=True).decode()
    moved = render_index([], ready=True, metrics_path="/probe-metrics").decode()
    assert "<a href='/probe-metrics'>Metrics</a>" in moved and "href='/metrics'" not in moved


def test_the_ranking_table_gets_a_chart_per_region_from_the_ring() -> None:
    clock = [1000.0]
    state = ranked_state(clock)
    recent = RecentProbes(per_region=5)
    for i in range(12):
        recent.add("t", "fast-1", 1000.0 + i, ProbeResult(0.01 + i / 1000), 0.01)
    parsed = parse(render_index([state.snapshot()], ready=True, recent=recent, now=1012.0))
    (_, rows), = [(css, rows) for css, rows in parsed.tables if css == "ranking"]
    assert rows[0][-1] == "Last 5 probes"
    titles = [t for t in parsed.text if t.startswith("t fast-1: ")]
    assert titles and titles[0].startswith("t fast-1: 5 recent probe(s), latest sample 21.0 ms")
    assert any(t.startswith("t new-1: no samples yet") for t in parsed.text)


# -- the chart ----------------------------------------------------------------------------------------


def samples(n: int, failed_every: int = 0) -> list[Sample]:
    return [Sample(float(i), None if failed_every and i % failed_every == 0 else 0.01 + (i % 7) / 1000, 0.012)
            for i in range(n)]


def svg_tree(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


def test_chart_draws_at_most_max_points_whatever_it_is_given() -> None:
    tree = svg_tree(latency_chart(samples(10_000, failed_every=997), "r", max_points=60))
    polylines = {p.get("class"): p.get("points", "").split() for p in tree.iter(f"{SVG}polyline")}
    assert 0 < len(polylines["samples"]) <= 60 and 0 < len(polylines["ema"]) <= 60
    crosses = list(tree.iter(f"{SVG}path"))
    assert 1 <= len(crosses) <= 60  # failures survive the reduction: 11 of them over 10,000 samples
    for x_y in polylines["samples"]:
        x, y = map(float, x_y.split(","))
        assert 0 <= x <= 160 and 0 <= y <= 36


def test_reduction_keeps_the_slowest_sample_and_every_failure_bucket() -> None:
    points = samples(1000)
    points[500] = Sample(500.0, 9.0, 0.01)
    points[10] = Sample(10.0, None, 0.01)
    reduced = reduce_points(points, 50)
    assert len(reduced) == 50
    assert any(s.latency == 9.0 for s in reduced) and any(s.latency is None for s in reduced)
    assert [s.at for s in reduced] == sorted(s.at for s in reduced)
    assert reduce_points(points[:10], 50) == points[:10]


def test_chart_label_is_escaped() -> None:
    label = "<script>alert('x')</script> & \"q\""
    markup = latency_chart(samples(3), label)
    assert "<script" not in markup
    tree = svg_tree(markup)
    title = tree.find(f"{SVG}title")
    assert title is not None and title.text is not None and title.text.startswith(label)
    assert tree.get("aria-label", "").startswith(label)


def test_chart_of_no_data_and_of_failures_only() -> None:
    empty = svg_tree(latency_chart([], "r"))
    assert [t.text for t in empty.iter(f"{SVG}text")] == ["no samples yet"]
    assert not list(empty.iter(f"{SVG}polyline"))
    failed = svg_tree(latency_chart([Sample(1.0, None, None), Sample(2.0, None, None)], "r"))
    assert not list(failed.iter(f"{SVG}polyline")) and len(list(failed.iter(f"{SVG}path"))) == 2
    assert "2 failed" in (failed.findtext(f"{SVG}title") or "")
    single = svg_tree(latency_chart([Sample(1.0, 0.0, 0.0)], "r"))  # one point, zero latency: no division by 0
    assert all(not math.isnan(float(v)) for p in single.iter(f"{SVG}polyline")
               for xy in (p.get("points") or "").split() for v in xy.split(","))
    with pytest.raises(ValueError, match="max_points"):
        latency_chart([], "r", max_points=1)


# -- the ring ------------------------------------------------------------------------------------------


def test_ring_keeps_the_newest_per_region_in_order() -> None:
    ring = RecentProbes(per_region=5, max_series=10, listing=7)
    for i in range(23):
        ring.add("t", "r", float(i), ProbeResult(i / 1000) if i % 4 else ProbeResult.failure(ErrorKind.DNS, "x"), 0.5)
    kept = ring.series("t", "r")
    assert [s.at for s in kept] == [18.0, 19.0, 20.0, 21.0, 22.0]
    assert kept[2].latency is None and kept[3].latency == pytest.approx(0.021) and kept[0].ema == 0.5
    listing = ring.listing()
    assert [p.at for p in listing] == [22.0, 21.0, 20.0, 19.0, 18.0, 17.0, 16.0]
    assert not listing[2].ok and listing[2].error == "dns"
    assert ring.series("t", "other") == () and ring.series("u", "r") == ()


def test_ring_bounds_the_number_of_series_evicting_the_least_recently_updated() -> None:
    ring = RecentProbes(per_region=3, max_series=4, listing=10)
    for region in ("a", "b", "c", "d"):
        ring.add("t", region, 1.0, ProbeResult(0.01), None)
    ring.add("t", "a", 2.0, ProbeResult(0.01), None)  # a is fresh again: b is now the oldest
    ring.add("t", "e", 3.0, ProbeResult(0.01), None)
    assert ring.series_count() == 4
    assert ring.series("t", "b") == () and len(ring.series("t", "a")) == 2 and len(ring.series("t", "e")) == 1
    for i in range(1000):
        ring.add("t", f"r{i}", float(i), ProbeResult(0.01), None)
    assert ring.series_count() == 4 and len(ring.listing()) == 10
    assert ring.max_bytes == 4 * 3 * BYTES_PER_SAMPLE


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_ring_refuses_bad_bounds(bad: object) -> None:
    with pytest.raises(ValueError, match="per_region must be a positive integer"):
        RecentProbes(per_region=bad)  # type: ignore[arg-type]
