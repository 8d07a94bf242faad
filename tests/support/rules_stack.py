"""The rules' and dashboards' proof with real parts: local stand-in regions, two real exporter processes (two
vantage points) probing them, and Debian's Prometheus scraping both with the project's rules loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.support.exporter import ExporterProcess, write_config
from tests.support.repo_files import load
from tests.support.servers import HttpServer, Reply, ServerGroup

# Server-side delays of the stand-in regions: the https probe's latency is its time to first byte.
DELAYS = {"eu-west-1": 0.010, "ap-south-1": 0.045, "sa-east-1": 0.075, "us-east-1": 0.110}
TARGET = "bedrock-runtime-https"
VANTAGE_POINTS = ("site-a", "site-b")
# The shipped thresholds, except the baseline's evaluation interval (1m would leave its panel empty for a minute).
TEST_THRESHOLDS = {"baseline_evaluation_interval": "1s"}


def exporter_config(cache: Path, endpoints: Mapping[str, str], ca_file: str) -> dict[str, Any]:
    return {
        "cache": {"type": "file", "path": str(cache)},
        "targets": [{"name": TARGET, "service": "bedrock-runtime", "probe": "https", "regions": sorted(endpoints),
                     "endpoints": dict(endpoints), "interval": "1s", "timeout": "900ms",
                     "options": {"ca_file": ca_file}}],
    }


class RulesStack:
    """Stand-in regions -> two exporters (site-a, site-b) -> Prometheus (1 s scrape and evaluation) with the rules."""

    def __init__(self, workdir: Path) -> None:
        demo = load("scripts/demo_prometheus.py")
        self.servers = ServerGroup(workdir)
        self.exporters: list[ExporterProcess] = []
        self.prometheus: Any = None
        self.regions: dict[str, HttpServer] = {}
        self.stopped: list[str] = []
        try:
            self.regions = {region: self.servers.https(Reply(status=403, body='{"message":"denied"}', delay=delay))
                            for region, delay in DELAYS.items()}
            endpoints = {region: server.url for region, server in self.regions.items()}
            for vantage in VANTAGE_POINTS:
                config = write_config(workdir / f"{vantage}.yaml",
                                      exporter_config(workdir / f"{vantage}-cache.json", endpoints,
                                                      self.servers.ca.ca_file))
                self.exporters.append(ExporterProcess(config))
            for exporter in self.exporters:
                exporter.wait_healthy()
            rules = demo.render_rules(workdir / "rules", TEST_THRESHOLDS)
            scraped = {vantage: f"127.0.0.1:{exporter.port}" for vantage, exporter in zip(VANTAGE_POINTS,
                                                                                        self.exporters, strict=True)}
            self.prometheus = demo.PrometheusProcess(workdir / "prometheus", demo.prometheus_config(scraped, rules))
            self.prometheus.wait_ready()
        except BaseException:
            self.close()
            raise

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.prometheus.query(promql)
        return result

    def query_range(self, promql: str, seconds: float = 30) -> list[dict[str, Any]]:
        end = time.time()
        data = self.prometheus.api("query_range", query=promql, start=f"{end - seconds:.3f}", end=f"{end:.3f}",
                                   step="1")
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [alert for alert in self.prometheus.alerts() if alert["labels"]["alertname"] == name]

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll `probe` until it returns something truthy; fail naming `what` and the logs' tails."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for exporter in self.exporters:
                if exporter.proc.poll() is not None:
                    raise AssertionError(f"exporter exited: {exporter.log()[-2000:]}")
            last = probe()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what}: not within {timeout}s (last: {last}); prometheus log: "
                             f"{self.prometheus.log_tail(800)}")

    def wait_for_ranking(self) -> None:
        """Both vantage points rank every region, in the order of the delays, as Prometheus sees it."""
        expected = sorted(DELAYS, key=DELAYS.__getitem__)

        def ranked() -> bool:
            ranks: dict[str, dict[str, float]] = {}
            for sample in self.query(f'region_latency_rank{{target="{TARGET}"}}'):
                by_region = ranks.setdefault(sample["metric"]["vantage"], {})
                by_region[sample["metric"]["region"]] = float(sample["value"][1])
            return all(sorted(by_region, key=by_region.__getitem__) == expected for by_region in ranks.values()) \
                and set(ranks) == set(VANTAGE_POINTS)

        self.wait("every region ranked in the order of its delay, at both vantage points", ranked)

    def stop_region(self, region: str) -> None:
        """The stand-in region goes away: its port refuses connections."""
        if region not in self.stopped:
            self.regions[region].close()
            self.stopped.append(region)

    def close(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        for exporter in self.exporters:
            exporter.stop()
        self.servers.close()


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    """Whether an instant or range result holds at least one number (NaN is not data a panel can show)."""
    for series in result:
        values = series.get("values") or [series["value"]]
        if any(math.isfinite(float(value)) for _, value in values):
            return True
    return False
