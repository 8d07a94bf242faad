"""The real exporter with a 1024 file-descriptor limit and 1,100 idle connections that never send a byte (issue 11:
new scrapes timed out, probes failed with `connection`, and asyncio logged 72,000 accept tracebacks in 26 s).

The server caps its connections below the descriptor limit (keeping room for probes, the cache and the log) and,
at the cap, closes the longest-idle connection for a new one: new scrapes are served, probes keep working, and
nothing floods the log."""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import ServerGroup

pytestmark = pytest.mark.integration

IDLE_CONNECTIONS = 1100
LIMIT = 1024
# python -m region_latency, with RLIMIT_NOFILE set to LIMIT (soft and hard: the server cannot raise it)
LAUNCHER = [sys.executable, "-c",
            "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
            "sys.argv[0] = 'region_latency'; runpy.run_module('region_latency', run_name='__main__')"]


def scrape(port: int, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_idle_connections_beyond_the_fd_limit_do_not_stop_scrapes_or_flood_the_log(
        tmp_path: Path, local_servers: ServerGroup) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 200:
        pytest.skip(f"this test needs {IDLE_CONNECTIONS + 200} file descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_CONNECTIONS + 200), hard))
    endpoints = {f"local-{i}": f"http://127.0.0.1:{local_servers.tcp().port}" for i in range(2)}
    config = write_config(tmp_path / "config.yaml", {"cache": {"type": "file", "path": str(tmp_path / "c.json")},
                                                      "targets": [{
        "name": "local", "service": "bedrock-runtime", "probe": "tcp", "regions": [], "endpoints": endpoints,
        "interval": "1s", "timeout": "500ms"}]})
    exporter = ExporterProcess(config, launcher=LAUNCHER)
    idle: list[socket.socket] = []
    try:
        exporter.wait_healthy()
        limits = Path(f"/proc/{exporter.proc.pid}/limits").read_text()
        assert f"Max open files            {LIMIT}                 {LIMIT}" in limits
        for _ in range(IDLE_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
            idle.append(sock)
        time.sleep(1)
        started = time.monotonic()
        answers = [scrape(exporter.port) for _ in range(20)]
        scrape_seconds = (time.monotonic() - started) / len(answers)
        probes_before = sum(exporter.by_region("region_latency_probes_total").values())
        time.sleep(2.5)
        probes_after = sum(exporter.by_region("region_latency_probes_total").values())
        failures = exporter.samples().get("region_latency_probe_failures_total", [])
        log = exporter.log()
    finally:
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
        exporter.stop()
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), [a[:40] for a in answers]
    assert probes_after > probes_before  # probing went on
    assert not [labels for labels, value in failures if value and labels.get("reason") == "connection"]
    assert "Traceback" not in log
    assert len(log.splitlines()) < 50, log[-3000:]
    print(f"fd limit {LIMIT}, {IDLE_CONNECTIONS} idle connections: {len(answers)} scrapes all 200, "
          f"{scrape_seconds * 1000:.1f} ms each on average; probes {probes_before:g} -> {probes_after:g} in 2.5 s; "
          f"{len(log.splitlines())} log lines")
