"""`serve` with tcp and https targets never imports botocore (a child process works out regions and URLs), also
across reloads; with an `api` target it does (boto3 needs it to probe).

The evidence is the serving process's own `sys.modules`, written when it exits: `python -m region_latency serve`
run through `runpy` by a two-line wrapper whose atexit hook saves the module names (the child that resolves regions
is a process of its own, so its imports are not in that list).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter import ExporterProcess, write_config
from tests.support.servers import Reply, ServerGroup

pytestmark = pytest.mark.integration


# `python -m region_latency ARGS...`, saving the names in sys.modules at exit to the file given first
WRAPPER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "region_latency"
runpy.run_module("region_latency", run_name="__main__", alter_sys=True)
"""


class ModuleListingExporter(ExporterProcess):
    """`python -m region_latency serve` through WRAPPER: `stop()` returns the modules it had imported."""

    def __init__(self, config: Path) -> None:
        self.modules_path = config.with_suffix(".modules.json")
        super().__init__(config, launcher=[sys.executable, "-c", WRAPPER, str(self.modules_path)],
                         extra_args=["--web.enable-lifecycle"])

    def probed_regions(self) -> set[str]:
        return {row["region"] for target in self.regions()["targets"] for row in target["regions"]
                if row.get("samples")}

    def stop_and_list_modules(self) -> set[str]:
        """Stop (SIGTERM: a clean exit); the modules the process had imported."""
        assert self.stop() == 0, self.log()[-2000:]
        return set(json.loads(self.modules_path.read_text()))


def botocore_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("botocore", "boto3")}


def config(endpoints: dict[str, str], ca_file: str, api: dict[str, Any] | None = None) -> dict[str, Any]:
    targets: list[dict[str, Any]] = [
        {"name": "t-https", "service": "bedrock-runtime", "probe": "https", "regions": [], "endpoints": endpoints,
         "interval": "1s", "timeout": "900ms", "options": {"ca_file": ca_file}},
        # a real region's URL from botocore's data (nothing listens there: failures are fine)
        {"name": "t-tcp", "service": "bedrock-runtime", "probe": "tcp", "regions": ["us-east-1"],
         "endpoints": endpoints, "interval": "1s", "timeout": "900ms"},
    ]
    if api:
        targets.append({"name": "t-api", "service": "bedrock", "probe": "api", "regions": [], "interval": "1s",
                        "timeout": "900ms", **api})
    return {"cache": "none", "log_level": "info", "targets": targets}


def test_serve_with_tcp_and_https_targets_never_imports_botocore(tmp_path: Path,
                                                                  local_servers: ServerGroup) -> None:
    ca = local_servers.ca.ca_file
    endpoints = {"sim-a": local_servers.https(Reply(status=403)).url}
    path = write_config(tmp_path / "config.yaml", config(endpoints, ca))
    exporter = ModuleListingExporter(path)
    try:
        exporter.wait_healthy()
        exporter.wait_for(lambda: "sim-a" in exporter.probed_regions(), what="probing")
        endpoints["sim-b"] = local_servers.https(Reply(status=403)).url
        write_config(path, config(endpoints, ca))
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_for(lambda: "sim-b" in exporter.probed_regions(), what="reloaded")
        path.write_text("targets: [{service: bedrok-runtime}]\n")
        response = exporter.client.post("/-/reload")
        assert response.status_code == 500 and "unknown service 'bedrok-runtime'" in response.text
        assert exporter.proc.poll() is None and "sim-b" in exporter.probed_regions()
    finally:
        modules = exporter.stop_and_list_modules()
    assert {"region_latency.resolve", "region_latency.probes.https", "region_latency.probes.tcp"} <= modules
    assert botocore_modules(modules) == set()


def test_serve_with_an_api_target_imports_botocore(tmp_path: Path, local_servers: ServerGroup,
                                                   dummy_aws_credentials: None) -> None:
    """The same evidence shows botocore when it is there: an `api` target needs boto3 in the serving process."""
    endpoints = {"sim-a": local_servers.https(Reply(status=403)).url}
    api = {"endpoints": {"sim-a": local_servers.http(Reply(status=200, body="{}")).url}}
    exporter = ModuleListingExporter(write_config(tmp_path / "config.yaml",
                                                 config(endpoints, local_servers.ca.ca_file, api)))
    try:
        exporter.wait_healthy()
        # boto3 is imported when an api probe runs (not when the kind is looked up): wait for one
        exporter.wait_for(lambda: any(row.get("samples") for target in exporter.regions()["targets"]
                                      if target["name"] == "t-api" for row in target["regions"]), what="api probe")
    finally:
        modules = exporter.stop_and_list_modules()
    assert {"boto3", "botocore.session", "region_latency.probes.api"} <= modules
