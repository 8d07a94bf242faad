"""The status page escapes every name it shows: a target, service, region or error text is text, never markup."""

from __future__ import annotations

from html.parser import HTMLParser

from region_latency.export.status_page import render_index
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import PlainRanking
from region_latency.state import TargetInfo, TargetState
from region_latency.tracker import RegionLatencyTracker

PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "small", "table", "tr", "th",
             "td"}
NAME = "\"'><script>alert('target')</script>"
SERVICE = "s3&<i>svc</i>"
PROBE = "<u>tcp</u>"
REGION = "<b onclick='x'>eu-west-1</b>"
DETAIL = "<img src=x onerror=alert(1)> & \"quoted\""


class Page(HTMLParser):
    """Every tag (with its attributes) and the text of every element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page() -> Page:
    state = TargetState(TargetInfo(NAME, SERVICE, PROBE), [REGION, "us-east-1"], RegionLatencyTracker(),
                        PlainRanking(), clock=lambda: 1000.0)
    state.record("us-east-1", ProbeResult(0.02, {"connect": 0.02}))
    state.record(REGION, ProbeResult.failure(ErrorKind.TLS, DETAIL))
    parser = Page()
    parser.feed(render_index([state.snapshot()], ready=True).decode())
    parser.close()
    return parser


def test_names_and_errors_are_text_not_markup() -> None:
    parsed = page()
    assert {tag for tag, _ in parsed.tags} <= PAGE_TAGS
    text = "".join(parsed.text)
    for shown in (NAME, SERVICE, PROBE, REGION, f"tls: {DETAIL}"):
        assert shown in text


def test_the_target_anchor_is_one_attribute_holding_the_name() -> None:
    headings = [attrs for tag, attrs in page().tags if tag == "h2"]
    assert headings == [[("id", NAME)]]
