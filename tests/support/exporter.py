"""Runs the real `region-latency-exporter` process for integration tests, and reads what it serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from region_latency_devkit.process import stop_process
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def exporter_command(*args: str) -> list[str]:
    """The console script as installed in this interpreter's environment."""
    return [sys.executable, "-m", "region_latency", *args]


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(exporter_command(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    return path


class ExporterProcess:
    """`region-latency-exporter serve --config <file>` on a free local port."""

    def __init__(self, config: Path, *, port: int | None = None, extra_args: Sequence[str] = (),
                 launcher: Sequence[str] | None = None) -> None:
        """`launcher` replaces `python -m region_latency` (a wrapper that runs it, say)."""
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.stderr_path = config.with_suffix(f".{self.port}.log")
        self._stderr = self.stderr_path.open("w")
        args = ("serve", "--config", str(config), "--listen", f"127.0.0.1:{self.port}", *extra_args)
        self.proc = subprocess.Popen(
            [*launcher, *args] if launcher else exporter_command(*args),
            stdout=subprocess.DEVNULL, stderr=self._stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.client = httpx.Client(base_url=self.base, timeout=10)

    def wait_healthy(self, timeout: float = 30) -> None:
        self._wait(lambda: self.get("/-/healthy").status_code == 200, timeout, "healthy")

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> None:
        self._wait(predicate, timeout, what)

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}: {self.log()}")
            try:
                if predicate():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"exporter not {what} after {timeout}s: {self.log()}")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def metrics_text(self) -> str:
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample of every family: name -> [(labels, value)]."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return out

    def by_region(self, name: str, target: str | None = None) -> dict[str, float]:
        return {labels["region"]: value for labels, value in self.samples().get(name, [])
                if target is None or labels.get("target") == target}

    def regions(self) -> dict[str, Any]:
        document: dict[str, Any] = self.get("/regions").json()
        return document

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        code = stop_process(self.proc, timeout)
        self.client.close()
        self._stderr.close()
        return code

    def log(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()
