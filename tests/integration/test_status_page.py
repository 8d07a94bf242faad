"""The status page in a real headless Chromium: it renders the ranking a person would read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_exporter_process import DELAYS, exporter_config, wait_for_order
from tests.support.browser import chromium_binary, dump_dom, screenshot
from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import Reply, ServerGroup, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (./test.sh installs it as root)"),
]


@pytest.fixture
def exporter(tmp_path: Path, local_servers: ServerGroup) -> Iterator[ExporterProcess]:
    endpoints = {region: local_servers.https(Reply(status=403, delay=delay)).url for region, delay in DELAYS.items()}
    endpoints["sa-east-1"] = f"https://127.0.0.1:{free_port()}"  # refused: shows up as not ranked
    document = exporter_config(tmp_path, endpoints, local_servers.ca.ca_file)
    process = ExporterProcess(write_config(tmp_path / "config.yaml", document))
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()


def test_status_page_shows_the_ranking_in_order(exporter: ExporterProcess, tmp_path: Path) -> None:
    wait_for_order(exporter)
    dom = dump_dom(exporter.base + "/")
    rows = re.findall(r"<tr><td>(\d*)</td><td>([a-z0-9-]+)</td>", dom)
    assert rows[:3] == [("1", "eu-west-1"), ("2", "ap-south-1"), ("3", "us-east-1")]
    assert rows[3] == ("", "sa-east-1")
    assert "refused" in dom
    assert 'href="/metrics"' in dom or "href='/metrics'" in dom
    shot = screenshot(exporter.base + "/", tmp_path / "status.png")
    assert shot.stat().st_size > 5000
