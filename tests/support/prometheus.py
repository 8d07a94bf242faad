"""A real Prometheus server (Debian's package) scraping given targets, for integration tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from region_latency_devkit.process import stop_process
from tests.support.servers import free_port


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    """`prometheus` with a 1 s scrape interval over `targets` (host:port), its data in `workdir`."""

    def __init__(self, workdir: Path, targets: Sequence[str], *, rule_files: Sequence[Path] = (),
                 scrape: Mapping[str, Any] | None = None) -> None:
        """`scrape`: more keys of the scrape config (scheme, tls_config, basic_auth, metrics_path, ...)."""
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (./test.sh installs it as root)")
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "region-latency", "static_configs": [{"targets": list(targets)}],
                                **(scrape or {})}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector; raises on a query error."""
        response = self.client.get("/api/v1/query", params={"query": promql})
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, predicate: Any = bool, timeout: float = 60) -> list[dict[str, Any]]:
        """Poll `promql` until `predicate(result)` holds."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                last = self.query(promql)
                if predicate(last):
                    return last
            except (httpx.TransportError, ValueError):  # not up yet, or still starting (503, not JSON)
                pass
            time.sleep(0.5)
        raise AssertionError(f"{promql!r} never satisfied the condition; last result {last}")

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self.client.close()
        self._log.close()
