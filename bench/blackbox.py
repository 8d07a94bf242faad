"""Debian's prometheus-blackbox-exporter 0.23, run inside the simulator's client namespace as the peer to beat.

Two modules: `tcp_connect` (a TCP handshake, like our tcp probe) and `https_403` (one HTTPS GET on a fresh
connection, trusting the simulator's CA, accepting the 403 an unauthenticated AWS endpoint answers, like our
https probe). Both IPv4 only, so no time goes to a v6 attempt.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import yaml

from bench.common import http_get, wait_until
from region_latency_devkit.netsim import RegionSimulator
from region_latency_devkit.process import stop_process

BINARY_CANDIDATES = ("/usr/bin/prometheus-blackbox-exporter", "prometheus-blackbox-exporter", "blackbox_exporter")
PORT = 9115
TCP_MODULE = "tcp_connect"
HTTPS_MODULE = "https_403"
_LINE = re.compile(r'^(probe_[a-z_]+)(?:\{phase="([a-z]+)"\})?\s+(\S+)$', re.MULTILINE)


def binary() -> str:
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise FileNotFoundError("prometheus-blackbox-exporter is not installed (apt-get install "
                            "prometheus-blackbox-exporter)")


def version() -> str:
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    m = re.search(r"version (\S+)", first)
    return m.group(1) if m else "unknown"


def config(ca_file: Path, timeout: str = "5s") -> dict[str, object]:
    return {"modules": {
        TCP_MODULE: {"prober": "tcp", "timeout": timeout,
                     "tcp": {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}},
        HTTPS_MODULE: {"prober": "http", "timeout": timeout, "http": {
            "method": "GET",
            "valid_status_codes": [200, 403],
            "preferred_ip_protocol": "ip4",
            "ip_protocol_fallback": False,
            "follow_redirects": False,
            "fail_if_not_ssl": True,
            "tls_config": {"ca_file": str(ca_file)},
        }},
    }}


class Blackbox:
    """A blackbox_exporter process in the client namespace, listening on 127.0.0.1:PORT there."""

    def __init__(self, sim: RegionSimulator, workdir: Path, port: int = PORT) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.config_path = workdir / "blackbox.yml"
        self.config_path.write_text(yaml.safe_dump(config(sim.ca_file)))
        self.log_path = workdir / "blackbox.log"
        self._log = self.log_path.open("w")
        self.proc = sim.run_in_client(
            [binary(), f"--config.file={self.config_path}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll /-/healthy; must be called from a thread in the client namespace."""
        wait_until(lambda: http_get(self.port, "/-/healthy", timeout=2)[0] == 200, timeout, "blackbox healthy",
                   alive=lambda: self.proc.poll() is None)

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self._log.close()


def probe_path(target: str, module: str) -> str:
    return f"/probe?target={quote(target, safe='')}&module={module}"


def tcp_target(address: str, port: int = 443) -> str:
    return f"{address}:{port}"


def parse_probe(body: str) -> dict[str, float]:
    """The interesting values of one /probe answer: `probe_success`, `probe_duration_seconds` and
    `phase.<name>` for each `probe_http_duration_seconds{phase=...}`."""
    out: dict[str, float] = {}
    for name, phase, value in _LINE.findall(body):
        if name == "probe_http_duration_seconds" and phase:
            out[f"phase.{phase}"] = float(value)
        elif not phase:
            out[name] = float(value)
    return out


def probe(port: int, target: str, module: str, timeout: float = 10.0) -> tuple[dict[str, float], float]:
    """Ask blackbox for one probe; (parsed values, seconds the whole request took). Call in the namespace."""
    started = time.perf_counter()
    status, body = http_get(port, probe_path(target, module), timeout=timeout)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise OSError(f"blackbox /probe answered {status}: {body[:200]!r}")
    return parse_probe(body.decode()), elapsed
