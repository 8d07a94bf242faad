"""The exporter over simulated regions, scraped by a real Prometheus with the project's rules: a newcomer sees the
ranking, the alerts and the dashboards' queries work without AWS.

    .venv/bin/python scripts/demo_prometheus.py            # Ctrl-C stops both

It runs `region-latency-exporter demo` (simulated regions with known round trips, one of them a black hole so an
alert has something to say) and Debian's `prometheus` with prometheus/rules rendered from prometheus/thresholds.yml
with shorter windows (DEMO_THRESHOLDS), then prints the URLs. The Prometheus launcher here is also what the rules'
integration tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
JOB = "region-latency"

# Simulated regions (round trips as seen from Frankfurt); sa-east-1 drops every packet: RegionLatencyRegionFailing.
DEMO_REGIONS = ("eu-central-1=6ms", "eu-west-1=24ms", "us-east-1=92ms", "ap-northeast-1=235ms",
                "sa-east-1=205ms,loss=1")
# Windows short enough to see alerts within a minute or two; the shipped values are in prometheus/thresholds.yml.
DEMO_THRESHOLDS: Mapping[str, Any] = {
    "failing_for": "30s", "failing_window": "2m", "fastest_changed_window": "5m", "stale_for": "1m",
    "rate_window": "1m", "baseline_evaluation_interval": "10s", "no_region_ranked_for": "1m",
}


def load_module(path: Path) -> ModuleType:
    """A module from a file outside any package (prometheus/generate.py, this script)."""
    name = f"_demo_{path.parent.name}_{path.stem}"  # prometheus/generate.py and grafana/generate.py differ
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def render_rules(out: Path, overrides: Mapping[str, Any]) -> list[Path]:
    """prometheus/rules/*.yml as prometheus/generate.py writes them, with `overrides` applied, into `out`."""
    generate = load_module(REPO / "prometheus" / "generate.py")
    paths: list[Path] = generate.write(out, generate.load_thresholds(overrides=overrides))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prometheus_config(exporters: Mapping[str, str], rule_files: Sequence[Path], interval: str = "1s") -> dict[str, Any]:
    """Scrape each exporter (vantage name -> host:port) as the example config does: one `vantage` label each."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{
            "job_name": JOB,
            "static_configs": [{"targets": [address], "labels": {"vantage": vantage}}
                               for vantage, address in exporters.items()],
        }],
    }


class PrometheusProcess:
    """Debian's `prometheus` with `config`, its data and log in `workdir`, on 127.0.0.1:`port`."""

    def __init__(self, workdir: Path, config: Mapping[str, Any], port: int | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (as root, ./test.sh installs Debian's package)")
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful /api/v1 answer; raises AssertionError with Prometheus' error otherwise."""
        body = self.client.get(f"/api/v1/{path}", params=params).json()
        if body.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/-/ready").status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text()[-chars:]

    def stop(self, timeout: float = 15) -> None:
        self.client.close()
        stop(self.proc, timeout)


def stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Until `url` answers 200; fails at once if `proc` (the process serving it) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--exporter-port", type=int, default=9720)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--workdir", type=Path, help="Prometheus' config, rules and data (default: a temp dir)")
    parser.add_argument("--interval", default="2s", help="probe interval of the simulated regions")
    parser.add_argument("--proxy", action="store_true", help="pass --proxy to `demo` (no network namespaces)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="region-latency-demo-")))
        try:
            return _run(args, workdir)
        except RuntimeError as error:
            print(f"demo_prometheus: {error}", file=sys.stderr)
            return 1


def _run(args: argparse.Namespace, workdir: Path) -> int:
    rules = render_rules(workdir / "rules", DEMO_THRESHOLDS)
    exporter_address = f"127.0.0.1:{args.exporter_port}"
    command = [sys.executable, "-m", "region_latency", "demo", "--listen", exporter_address,
               "--interval", args.interval, *(arg for region in DEMO_REGIONS for arg in ("--region", region)),
               *(["--proxy"] if args.proxy else [])]
    with (workdir / "exporter.log").open("w") as log:
        exporter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    prometheus: PrometheusProcess | None = None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            wait_http(f"http://{exporter_address}/-/healthy", exporter)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; see {workdir / 'exporter.log'}") from None
        prometheus = PrometheusProcess(workdir / "prometheus",
                                       prometheus_config({"demo": exporter_address}, rules, "2s"),
                                       args.prometheus_port)
        prometheus.wait_ready()
        print(f"exporter:   http://{exporter_address}/  (ranking)   http://{exporter_address}/metrics\n"
              f"prometheus: {prometheus.url}/alerts   {prometheus.url}/rules   {prometheus.url}/graph\n"
              f"dashboards: import grafana/dashboards/*.json into Grafana with a Prometheus datasource at"
              f" {prometheus.url} (grafana/README.md)\n"
              f"rules:      {workdir / 'rules'} (prometheus/thresholds.yml with the demo's short windows)\n"
              f"sa-east-1 drops every packet: RegionLatencyRegionFailing is pending, then firing after 30s.\n"
              f"Ctrl-C stops both.", flush=True)
        while not stopping:
            if exporter.poll() is not None or prometheus.proc.poll() is not None:
                raise RuntimeError(f"a process exited; logs in {workdir}")
            time.sleep(0.2)
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.send_signal(signal.SIGINT)
        stop_after = time.monotonic() + 30
        while exporter.poll() is None and time.monotonic() < stop_after:
            time.sleep(0.1)
        stop(exporter, 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
