"""A target with `ip_families: [ipv4, ipv6]`: every region probed over each family, one EMA per family, series
labelled `ip_family`; a family a region's name has no address of is reported once, not as a failing region.

The exporter runs in a mount namespace of its own whose /etc/hosts gives `dual.test` both 127.0.0.1 and ::1 (and
`v4only.test` 127.0.0.1 only); a stand-in answers on 127.0.0.1 after 10 ms and on ::1, same port, after 60 ms.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import HttpServer, Reply, free_port

pytestmark = pytest.mark.integration

V4_DELAY, V6_DELAY = 0.010, 0.060


def _private_hosts_works(hosts: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts"], capture_output=True,
                           check=False)
    return probe.returncode == 0


@pytest.fixture
def servers() -> Iterator[tuple[HttpServer, HttpServer]]:
    for _ in range(20):  # the same free port on both loopbacks
        port = free_port()
        try:
            v6 = HttpServer(Reply(status=403, delay=V6_DELAY), host="::1", port=port)
        except OSError:
            continue
        try:
            v4 = HttpServer(Reply(status=403, delay=V4_DELAY), port=port)
        except OSError:
            v6.close()
            continue
        try:
            yield v4, v6
        finally:
            v4.close()
            v6.close()
        return
    pytest.skip("no port free on both 127.0.0.1 and ::1")


@pytest.fixture
def exporter(tmp_path: Path, servers: tuple[HttpServer, HttpServer]) -> Iterator[ExporterProcess]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 dual.test v4only.test\n::1 dual.test\n")
    if not _private_hosts_works(hosts):
        pytest.skip("needs root to bind-mount a private /etc/hosts (unshare -m)")
    port = servers[0].port
    dual = {"name": "dual", "service": "bedrock-runtime", "probe": "https", "ip_families": ["ipv4", "ipv6"],
            "regions": ["us-east-1", "eu-west-1"],
            "endpoints": {"us-east-1": f"http://dual.test:{port}", "eu-west-1": f"http://v4only.test:{port}"},
            "interval": "1s", "timeout": "900ms"}
    plain = {"name": "plain", "service": "bedrock-runtime", "probe": "tcp", "regions": ["us-east-1"],
             "endpoints": {"us-east-1": f"http://127.0.0.1:{port}"}, "interval": "1s", "timeout": "900ms"}
    config = write_config(tmp_path / "config.yaml", {"cache": {"type": "none"}, "targets": [dual, plain]})
    launcher = ["unshare", "-m", "sh", "-c", f'mount --bind {hosts} /etc/hosts && exec "$0" "$@"',
                sys.executable, "-m", "region_latency"]
    process = ExporterProcess(config, launcher=launcher)
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()


def test_each_family_has_its_own_ema_and_label_and_a_missing_family_is_reported_once(
        exporter: ExporterProcess) -> None:
    def emas() -> dict[tuple[str, str | None, str], float]:
        return {(labels["target"], labels.get("ip_family"), labels["region"]): value
                for labels, value in exporter.samples().get("region_latency_ema_seconds", [])}

    exporter.wait_for(lambda: {("dual", "ipv4", "us-east-1"), ("dual", "ipv6", "us-east-1"),
                               ("dual", "ipv4", "eu-west-1"), ("plain", None, "us-east-1")} <= set(emas()),
                      30, "an EMA per family")
    found = emas()
    # which stand-in answered, told apart by its delay (the timed window can start a hair after the stand-in's
    # sleep did, so not compared with the delays themselves: a 59.99 ms EMA for 60 ms failed once)
    middle = (V4_DELAY + V6_DELAY) / 2
    assert found[("dual", "ipv4", "us-east-1")] < middle  # answered by the 127.0.0.1 stand-in
    assert found[("dual", "ipv6", "us-east-1")] > middle  # answered by the ::1 stand-in
    assert ("dual", "ipv6", "eu-west-1") not in found  # v4only.test has no IPv6 address: no EMA, no failure
    assert "plain" in {target for target, family, _ in found if family is None}  # no ip_family label when not asked

    document = exporter.regions()
    by_family = {t["ip_family"]: t for t in document["targets"] if t["name"] == "dual"}
    assert set(by_family) == {"ipv4", "ipv6"}
    v6_regions = {r["region"]: r for r in by_family["ipv6"]["regions"]}
    assert v6_regions["eu-west-1"]["state"] == "unmeasured"
    assert "has no IPv6 address" in v6_regions["eu-west-1"]["ip_family_unavailable"]
    assert v6_regions["eu-west-1"]["failures_total"] == 0
    assert v6_regions["us-east-1"]["ip_family_unavailable"] is None
    failures = exporter.samples().get("region_latency_probe_failures_total", [])
    assert not [labels for labels, _ in failures if labels.get("region") == "eu-west-1"]
    assert exporter.log().count("not available from here") == 1
    page = exporter.get("/").text
    assert "https probe, ipv4" in page and "https probe, ipv6" in page and "id='dual@ipv6'" in page
    # each family's results are its own in the status page's recent results and charts (they shared one ring)
    assert "<td class='name'>dual@ipv4</td>" in page and "<td class='name'>dual@ipv6</td>" in page
    assert "dual@ipv4 us-east-1" in page and "dual@ipv6 us-east-1" in page  # the charts' names
