"""The status page in a real headless Chromium, as an on-call engineer would open it.

Against the real exporter process and local HTTPS stand-ins for regions: the page renders the ranking in the order
/regions publishes, with a chart per region; a region whose stand-in is stopped is shown failing after its next
probes; it fits 400 px without the page scrolling sideways; the debug view of a configured region shows its
phases and an unconfigured one is refused; and it works behind the web config's TLS and basic auth. The
screenshot is written as a test artifact (and, with STATUS_PAGE_SCREENSHOT=<path>, to that path: the picture in
docs/status-page.png is made that way).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from region_latency.export.guard import GuardedHandler
from region_latency.export.probe_debug import ProbeDebugger
from region_latency.export.prometheus import build_registry
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import HttpServer
from region_latency.export.webconfig import WebConfigFile
from region_latency.probes import get_probe
from region_latency.ranking import PlainRanking
from region_latency.recent import RecentProbes
from region_latency.state import TargetInfo, TargetState
from region_latency.targets import load_targets
from region_latency.tracker import RegionLatencyTracker
from tests.integration.test_exporter_process import DELAYS, TARGET, exporter_config, wait_for_order
from tests.support.browser import DevTools, chromium_binary, dump_dom
from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import HttpServer as StandIn
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (./test.sh installs it as root)"),
]

ROWS = "[...document.querySelectorAll('table.ranking tbody tr')]"


class Running:
    def __init__(self, process: ExporterProcess, stand_ins: dict[str, StandIn]) -> None:
        self.process = process
        self.stand_ins = stand_ins


@pytest.fixture
def exporter(tmp_path: Path, local_servers: ServerGroup) -> Iterator[Running]:
    stand_ins = {region: local_servers.https(Reply(status=403, delay=delay)) for region, delay in DELAYS.items()}
    endpoints = {region: server.url for region, server in stand_ins.items()}
    endpoints["sa-east-1"] = f"https://127.0.0.1:{free_port()}"  # refused: shows up as not ranked
    document = exporter_config(tmp_path, endpoints, local_servers.ca.ca_file)
    process = ExporterProcess(write_config(tmp_path / "config.yaml", document))
    try:
        process.wait_healthy()
        yield Running(process, stand_ins)
    finally:
        process.stop()


@pytest.fixture
def browser() -> Iterator[DevTools]:
    with DevTools(extra_flags=("--ignore-certificate-errors",)) as devtools:
        yield devtools


def published_order(process: ExporterProcess) -> list[str]:
    (target,) = process.regions()["targets"]
    return [region["region"] for region in target["regions"]]


def keep_screenshot(browser: DevTools, tmp_path: Path, name: str) -> Path:
    """The screenshot as a test artifact; copied to $STATUS_PAGE_SCREENSHOT when set (docs/status-page.png)."""
    shot = browser.screenshot(tmp_path / name, max_height=1600)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    wanted = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if wanted:
        shutil.copyfile(shot, wanted)
    return shot


def test_the_page_renders_the_ranking_in_the_published_order(exporter: Running, browser: DevTools,
                                                             tmp_path: Path) -> None:
    process = exporter.process
    wait_for_order(process)
    process.wait_for(lambda: "refused" in process.get("/").text, 20, "the refused region's error on the page")
    browser.set_width(1400)
    for _ in range(5):  # the order may move between the two reads; it settles once every region has samples
        before = published_order(process)
        assert browser.open(process.base + "/") == 200
        shown = browser.evaluate(f"{ROWS}.map(r => r.dataset.region)")
        if shown == before == published_order(process):
            break
    assert shown == published_order(process)
    assert shown[:3] == ["eu-west-1", "ap-south-1", "us-east-1"] and shown[3] == "sa-east-1"
    cells = browser.evaluate(f"{ROWS}.map(r => [...r.cells].map(c => c.innerText.trim()))")
    assert [row[0] for row in cells] == ["1", "2", "3", "\u2013"]
    assert cells[3][4].endswith(("failing", "unmeasured")) and "refused" in cells[3][6]
    assert all(row[4].endswith("healthy") for row in cells[:3])
    charts = browser.evaluate("[...document.querySelectorAll('table.ranking svg.chart')]"
                              ".map(s => [s.getBoundingClientRect().width, s.querySelectorAll('polyline').length])")
    assert len(charts) == 4 and all(width > 100 for width, _ in charts)
    assert all(lines == 2 for _, lines in charts[:3])  # samples and EMA drawn for every answering region
    assert browser.evaluate("document.querySelector('meta[http-equiv=refresh]').content") == "10"
    assert browser.evaluate("document.querySelectorAll('script').length") == 0
    assert TARGET in browser.evaluate("document.title + document.body.innerText")
    keep_screenshot(browser, tmp_path, "status-page.png")


def test_a_stopped_region_is_shown_failing_after_its_next_probe(exporter: Running, browser: DevTools) -> None:
    process = exporter.process
    wait_for_order(process)
    exporter.stand_ins["eu-west-1"].close()

    def failing() -> bool:
        (target,) = process.regions()["targets"]
        return any(r["region"] == "eu-west-1" and r["state"] == "failing" for r in target["regions"])

    process.wait_for(failing, 30, "eu-west-1 failing")
    assert browser.open(process.base + "/") == 200
    rows = browser.evaluate(f"Object.fromEntries({ROWS}.map(r => [r.dataset.region, "
                            "[...r.cells].map(c => c.innerText.trim())]))")
    assert rows["eu-west-1"][0] == "\u2013" and rows["eu-west-1"][4].endswith("failing")
    assert "refused" in rows["eu-west-1"][6]
    assert rows["ap-south-1"][0] == "1"
    failed = browser.evaluate("[...document.querySelectorAll('table.probes')][0].innerText")
    assert "eu-west-1" in failed and "FAILED (refused)" in failed


def test_at_400_px_the_page_does_not_scroll_sideways(exporter: Running, browser: DevTools) -> None:
    wait_for_order(exporter.process)
    browser.set_width(400)
    assert browser.open(exporter.process.base + "/") == 200
    widths = browser.evaluate("[window.innerWidth, document.documentElement.scrollWidth, "
                              "document.documentElement.clientWidth]")
    assert widths[0] == 400 and widths[1] <= widths[2] <= 400, widths  # clientWidth: less a vertical scrollbar
    # the wide tables scroll inside their own box; the first columns (rank, region, EMA) are in view
    scrollers = browser.evaluate("[...document.querySelectorAll('.scroll')].map(d => getComputedStyle(d).overflowX)")
    assert scrollers and set(scrollers) == {"auto"}
    region_cell = browser.evaluate("document.querySelector('table.ranking tbody th').getBoundingClientRect().right")
    assert region_cell <= 400


def test_the_debug_view_shows_the_phases_and_refuses_what_is_not_configured(exporter: Running,
                                                                            browser: DevTools) -> None:
    base = exporter.process.base
    assert browser.open(f"{base}/probe?target={TARGET}&region=eu-west-1&debug=true") == 200
    text = browser.evaluate("document.body.innerText")
    for step in ("Beginning probe", "TCP connection established", "TLS handshake done", "version=TLSv1.3",
                 "Received response", "status_code=403", "Probe succeeded"):
        assert step in text, text
    for phase in ("connect", "tls", "ttfb", "total"):
        assert f"\n  {phase:<8} 0." in text
    assert browser.open(f"{base}/probe?target={TARGET}&region=eu-central-1&debug=true") == 404
    assert f"target {TARGET} does not probe region 'eu-central-1'" in browser.evaluate("document.body.innerText")
    assert browser.open(f"{base}/probe?target=other&region=eu-west-1&debug=true") == 404
    assert browser.open(f"{base}/probe?target={TARGET}&region=eu-west-1&debug=true&url=http://127.0.0.1/") == 400
    # the page links each region's debug view
    browser.open(base + "/")
    link = browser.evaluate("document.querySelector('table.ranking tbody a').getAttribute('href')")
    assert link.startswith(f"/probe?target={TARGET}&region=") and link.endswith("&debug=true")


def test_dump_dom_without_devtools_shows_the_table() -> None:
    # the plain --dump-dom path (no DevTools) still works for a page with no script: a static copy suffices
    state = TargetState(TargetInfo("t", "s3", "tcp"), ["r1"], RegionLatencyTracker(), PlainRanking())
    from region_latency.export.status_page import render_index

    page = "data:text/html;base64," + base64.b64encode(render_index([state.snapshot()], ready=False)).decode()
    dom = dump_dom(page)
    assert "<caption>Regions of t, fastest first</caption>" in dom and "unmeasured" in dom


# -- behind the web config's TLS and basic auth -------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path, local_servers: ServerGroup) -> Iterator[dict[str, Any]]:
    """The exporter's routes, fed by real probes of a local stand-in, behind a web config with TLS + basic auth."""
    stand_in = local_servers.https(Reply(status=403, delay=0.005))
    config_path = tmp_path / "config.yaml"
    write_config(config_path, exporter_config(tmp_path, {"eu-west-1": stand_in.url}, local_servers.ca.ca_file))
    resolved = load_targets(config_path, env={}, overrides={})
    (target,) = resolved.targets
    state = TargetState(TargetInfo(target.name, target.config.service, "https"), target.regions,
                        RegionLatencyTracker(), PlainRanking())
    recent = RecentProbes()
    probe = get_probe("https")
    for _ in range(5):
        result = probe(target.probe_targets()["eu-west-1"], 2.0)
        state.record("eu-west-1", result)
        recent.add(target.name, "eu-west-1", time.time(), result, state.tracker.get_latency("eu-west-1"))
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "web.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "web.crt"))
    password_hash = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: web.crt\n  key_file: web.key\n"
        f"basic_auth_users:\n  oncall: '{password_hash}'\n")
    web = WebConfigFile(tmp_path / "web.yml")
    hooks = WebHooks(snapshots=lambda: [state.snapshot()], ready=lambda: True, reload=lambda: None, recent=recent,
                     debug_probe=ProbeDebugger(lambda: resolved))
    app = ExporterApp(build_registry(lambda: [state.snapshot()]), hooks)
    guard = GuardedHandler(app, web)
    server = HttpServer(guard, "127.0.0.1", 0, ssl_context=web.server_context(), accept_peer=guard.accept_peer)
    server.start()
    try:
        yield {"base": f"https://127.0.0.1:{server.address[1]}", "target": target.name}
    finally:
        server.stop()


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_page_and_debug_view_work_behind_tls_and_basic_auth(guarded: dict[str, Any], browser: DevTools) -> None:
    base, target = guarded["base"], guarded["target"]
    for headers in ({}, basic_auth("oncall", "wrong")):  # headless Chromium has no password prompt: 401 ends it
        browser.set_headers(headers)
        with pytest.raises(AssertionError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            browser.open(base + "/")
        assert httpx.get(base + "/", headers=headers, verify=False).status_code == 401
    browser.set_headers(basic_auth("oncall", "s3cret"))
    assert browser.open(base + "/") == 200
    assert browser.evaluate(f"{ROWS}.map(r => r.dataset.region)") == ["eu-west-1"]
    assert browser.evaluate("document.querySelector('table.ranking svg.chart title').textContent") \
        .startswith(f"{target} eu-west-1: 5 recent probe(s)")
    assert browser.evaluate("location.protocol") == "https:"
    assert browser.open(f"{base}/probe?target={target}&region=eu-west-1&debug=true") == 200
    assert "TLS handshake done" in browser.evaluate("document.body.innerText")
