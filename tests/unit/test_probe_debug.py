"""/probe?debug=true against real local servers: configured targets and regions only, bounded, and a step log.

The debugger runs the configured probe (never a URL from the request), refuses names that are not configured,
and limits how often and how many at once, so that it can neither reach another host nor flood a region.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from region_latency.export.probe_debug import ProbeDebugger
from region_latency.export.prometheus import build_registry
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import Request
from region_latency.probes import get_probe
from region_latency.probes.base import Target
from region_latency.targets import ResolvedConfig, load_targets
from tests.support.servers import Reply, ServerGroup, free_port


def resolved(tmp_path: Path, targets: list[dict[str, Any]]) -> ResolvedConfig:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"cache": "none", "targets": targets}))
    return load_targets(path, env={}, overrides={})


def https_target(name: str, endpoints: dict[str, str], ca_file: str, timeout: str = "2s") -> dict[str, Any]:
    return {"name": name, "service": "bedrock-runtime", "probe": "https", "regions": [], "endpoints": endpoints,
            "interval": "30s", "timeout": timeout, "options": {"ca_file": ca_file}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path, local_servers: ServerGroup) -> dict[str, Any]:
    server = local_servers.https(Reply(status=403, body="denied"))
    slow = local_servers.https(Reply(status=200, delay=0.6))
    listener = local_servers.tcp()
    config = resolved(tmp_path, [
        https_target("web", {"eu-west-1": server.url, "us-east-1": slow.url,
                             "sa-east-1": f"https://127.0.0.1:{free_port()}"}, local_servers.ca.ca_file),
        {"name": "raw", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
         "endpoints": {"eu-west-1": listener.https_url()}, "interval": "30s", "timeout": "1s"},
        https_target("named", {"eu-west-1": server.url_for("localhost")}, local_servers.ca.ca_file),
    ])
    return {"config": config, "server": server, "slow": slow}


def debugger(config: ResolvedConfig, clock: Clock | None = None, **limits: Any) -> ProbeDebugger:
    return ProbeDebugger(lambda: config, clock=clock or Clock(), **limits)


def test_the_debug_view_of_a_configured_https_region_shows_every_step(setup: dict[str, Any]) -> None:
    answer = debugger(setup["config"]).respond("target=web&region=eu-west-1&debug=true")
    text = answer.body.decode()
    assert answer.status == 200, text
    assert dict(answer.headers)["Content-Type"] == "text/plain; charset=utf-8"
    port = setup["server"].port
    lines = text.splitlines()
    assert lines[0] == "Logs for the probe:"
    assert "msg=\"Beginning probe\" target=web region=eu-west-1 probe=https " \
           f"endpoint=https://127.0.0.1:{port} timeout_seconds=2" in lines[1]
    assert "msg=\"Target is an IP address: no DNS lookup\" ip=127.0.0.1" in text
    assert f"msg=\"TCP connection established\" address=127.0.0.1:{port} duration_seconds=0." in text
    assert "msg=\"TLS handshake done\" version=TLSv1.3 server_name=127.0.0.1" in text
    assert "msg=\"Received response\" status_code=403 ttfb_seconds=0." in text
    assert "level=info msg=\"Probe succeeded\" latency_seconds=0." in text
    for phase in ("connect", "tls", "ttfb", "total"):
        assert f"\n  {phase:<8} 0." in text
    assert "not recorded" in text
    assert len(setup["server"].requests) == 1  # one probe, one request


def test_a_named_endpoint_shows_the_resolved_address_and_tcp_and_failures_show_why(setup: dict[str, Any]) -> None:
    debug = debugger(setup["config"])
    named = debug.respond("target=named&region=eu-west-1&debug=true").body.decode()
    assert "msg=\"Resolving target address\" host=localhost" in named
    assert "msg=\"Resolved target address\" ip=" in named and "  dns      0." in named
    assert "server_name=localhost" in named
    tcp = debug.respond("target=raw&region=eu-west-1&debug=true").body.decode()
    assert "msg=\"TCP connection established\" address=127.0.0.1:" in tcp and "Probe succeeded" in tcp
    assert "TLS handshake" not in tcp
    refused = debug.respond("target=web&region=sa-east-1&debug=true")
    assert refused.status == 200
    assert "level=error msg=\"Probe failed\" error=refused detail=\"TCP connect: ConnectionRefusedError" \
        in refused.body.decode()


@pytest.mark.parametrize(("query", "status", "message"), [
    ("target=web&region=eu-central-1&debug=true", 404,
     "target web does not probe region 'eu-central-1' (its regions: eu-west-1, sa-east-1, us-east-1)"),
    ("target=nope&region=eu-west-1&debug=true", 404, "no configured target 'nope' (configured: named, raw, web)"),
    ("target=web&region=eu-west-1", 400, "only the debug view is served here: add debug=true; use /probe?"),
    ("target=web&debug=true", 400, "missing target or region; use /probe?"),
    ("target=web&region=eu-west-1&debug=true&url=http://169.254.169.254/", 400,
     "unknown query parameter(s): 'url'; use /probe?"),
    ("target=web&region=eu-west-1&region=us-east-1&debug=true", 400, "give each parameter once (repeated: region)"),
    ("target=" + "x" * 500 + "&region=eu-west-1&debug=true", 404, "no configured target 'xxxxx"),
])
def test_anything_not_configured_is_refused_in_one_line_and_probes_nothing(
        setup: dict[str, Any], query: str, status: int, message: str) -> None:
    answer = debugger(setup["config"]).respond(query)
    text = answer.body.decode()
    assert answer.status == status and text.startswith(message), text
    assert text.count("\n") == 1 and len(text) < 400
    assert setup["server"].requests == [] and setup["slow"].requests == []


def test_a_region_is_probed_at_most_once_per_interval_and_all_within_a_burst(setup: dict[str, Any]) -> None:
    clock = Clock()
    debug = debugger(setup["config"], clock, region_interval=2.0, rate=1.0, burst=2)
    assert debug.respond("target=web&region=eu-west-1&debug=true").status == 200
    again = debug.respond("target=web&region=eu-west-1&debug=true")
    assert again.status == 429 and dict(again.headers)["Retry-After"] == "2"
    assert debug.respond("target=raw&region=eu-west-1&debug=true").status == 200
    spent = debug.respond("target=named&region=eu-west-1&debug=true")  # the burst of 2 is used up
    assert spent.status == 429 and "too many debug probes" in spent.body.decode()
    clock.now += 2.0
    assert debug.respond("target=web&region=eu-west-1&debug=true").status == 200
    assert len(setup["server"].requests) == 2


def test_concurrent_debug_probes_are_bounded_and_refused_at_once_beyond(setup: dict[str, Any]) -> None:
    debug = debugger(setup["config"], max_concurrent=1)
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(
        debug.respond("target=web&region=us-east-1&debug=true").status))
    slow.start()
    try:
        for _ in range(100):  # until the slow probe's request reached its server
            if setup["slow"].requests:
                break
            threading.Event().wait(0.01)
        busy = debug.respond("target=web&region=eu-west-1&debug=true")
        assert busy.status == 429 and "already running" in busy.body.decode()
    finally:
        slow.join(5)
    assert answers == [200]
    assert setup["server"].requests == []


def test_the_route_takes_get_only_and_is_absent_without_a_debugger(setup: dict[str, Any]) -> None:
    def app(debug: ProbeDebugger | None) -> ExporterApp:
        hooks = WebHooks(snapshots=list, ready=lambda: True, reload=lambda: None, debug_probe=debug)
        return ExporterApp(build_registry(list), hooks)

    def request(method: str, query: str) -> Request:
        return Request(method=method, path="/probe", query=query, headers={})

    with_debug = app(debugger(setup["config"]))
    refused = with_debug.respond_now(request("HEAD", "target=web&region=eu-west-1&debug=true"))
    assert refused is not None and refused.status == 405
    assert with_debug.respond_now(request("GET", "")) is None  # answered on a worker thread
    assert with_debug.respond(request("GET", "target=web&region=eu-west-1&debug=true")).status == 200
    assert app(None).respond(request("GET", "target=web&region=eu-west-1&debug=true")).status == 404


def test_probe_results_carry_the_address_and_tls_version(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(status=204))
    result = get_probe("https")(Target("s", "r", server.url_for("localhost"),
                                       {"ca_file": local_servers.ca.ca_file}), 2.0)
    assert result.ok and result.address in ("127.0.0.1", "::1") and result.tls_version == "TLSv1.3"
    refused = get_probe("tcp")(Target("s", "r", f"127.0.0.1:{free_port()}"), 1.0)
    assert not refused.ok and refused.address == "127.0.0.1" and refused.tls_version is None


def test_a_dual_stack_target_is_debugged_one_family_at_a_time(tmp_path: Path, local_servers: ServerGroup) -> None:
    """The two families of a target with ip_families share its name: `/probe` asks which one (it probed the last
    family configured, whichever was asked for)."""
    server = local_servers.https(Reply(status=200))
    target = https_target("dual", {"eu-west-1": server.url}, local_servers.ca.ca_file)
    config = resolved(tmp_path, [{**target, "ip_families": ["ipv4", "ipv6"]}])
    debug = debugger(config)
    both = debug.respond("target=dual&region=eu-west-1&debug=true")
    assert both.status == 404
    assert both.body.decode().startswith("target dual probes 2 IP families: ask for one, dual@ipv4 or dual@ipv6")
    assert server.requests == []
    v4 = debug.respond("target=dual@ipv4&region=eu-west-1&debug=true").body.decode()
    assert "target=dual@ipv4" in v4 and "Probe succeeded" in v4
    v6 = debug.respond("target=dual@ipv6&region=eu-west-1&debug=true").body.decode()
    assert "ip_family_unavailable" in v6 and len(server.requests) == 1  # 127.0.0.1 has no IPv6 path
