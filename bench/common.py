"""Helpers every benchmark shares: statistics, the machine, process meters, simulated regions, the exporter.

Benchmarks run their clients inside the simulator's client namespace (the regions are reachable only from
there); everything here that opens a socket expects to be called on a thread that is in it
(`RegionSimulator.call_in_client`) or in a process started with `RegionSimulator.run_in_client`.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from region_latency_devkit.netsim import RegionSimulator, RegionSpec
from region_latency_devkit.process import stop_process

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / ".out"  # logs and raw numbers of the latest run (git-ignored)


# -- statistics ------------------------------------------------------------------------------------------------------

def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default; nan for no data."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def ms(seconds: float, digits: int = 3) -> str:
    """Seconds as a millisecond string with a fixed number of decimals."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:.{digits}f}"


# -- results ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Goal:
    """One line of the summary: what was promised, what was measured, and whether it held."""

    what: str
    goal: str
    measured: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


@dataclass(slots=True)
class BenchResult:
    """What one benchmark hands to the report: its section (markdown) and its goal lines."""

    key: str  # module name: accuracy, sweep, scrape, footprint, warmstart
    title: str  # the `## ` heading of its section in BENCHMARKS.md
    body: str  # markdown under the heading
    goals: list[Goal] = field(default_factory=list)
    seconds: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)  # numbers written to bench/.out/<key>.json


# -- the machine -----------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """What the numbers were measured on; the load average says how busy the shared machine was."""
    load = os.getloadavg()
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in load),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def machine_line(info: Mapping[str, str] | None = None) -> str:
    m = info or machine()
    return (f"{m['date']} on {m['cpu']}, {m['cores']} cores, {m['kernel']}, Python {m['python']}, "
            f"load average at start {m['load']}")


def command_line() -> str:
    """The command as typed, with the interpreter relative to the repository when it lives there."""
    exe = os.path.relpath(sys.executable, REPO)
    if exe.startswith(".."):
        exe = sys.executable
    spec = sys.modules["__main__"].__spec__
    head = [exe, "-m", spec.name.removesuffix(".__main__")] if spec is not None else [exe, sys.argv[0]]
    return " ".join([*head, *sys.argv[1:]])


# -- process meters --------------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size now (VmRSS)."""
    return _status_kb(pid, "VmRSS") * 1024


def thread_count(pid: int) -> int:
    return _status_kb(pid, "Threads")


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size the process reached (VmHWM)."""
    return _status_kb(pid, "VmHWM") * 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads, also finished ones) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# -- simulated regions -----------------------------------------------------------------------------------------------

def spread_rtts(count: int, low: float = 0.010, high: float = 0.300) -> list[float]:
    """`count` round-trip times evenly spread over [low, high] (seconds), rounded to 0.1 ms."""
    if count == 1:
        return [high]
    return [round(low + (high - low) * i / (count - 1), 4) for i in range(count)]


def region_names(count: int) -> list[str]:
    """Real AWS region names from botocore (label lengths as in production), then made-up ones if short."""
    from region_latency.regions import partition_regions

    names = list(partition_regions("aws"))[:count]
    names += [f"sim-{i:02d}" for i in range(len(names), count)]
    return names


def simulated_regions(count: int, low: float = 0.010, high: float = 0.300) -> dict[str, RegionSpec]:
    return {name: RegionSpec(rtt=rtt) for name, rtt in zip(region_names(count), spread_rtts(count, low, high),
                                                           strict=True)}


def start_simulator(regions: Mapping[str, RegionSpec], *, busy_read: bool = False) -> RegionSimulator:
    """A started simulator in netns mode: the benchmarks need handshakes delayed, the proxy fallback cannot.
    `busy_read`: the delay line reads without sleeping, so its own wake-ups stay out of every round trip."""
    sim = RegionSimulator(regions, mode="netns", busy_read=busy_read)
    sim.start()
    return sim


# -- HTTP inside the namespace ---------------------------------------------------------------------------------------

def http_get(port: int, path: str, *, host: str = "127.0.0.1", timeout: float = 10.0,
             headers: Mapping[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body). Raises OSError when nothing listens."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05,
               alive: Callable[[], bool] | None = None) -> float:
    """Poll until `predicate()` is true; returns the seconds waited. TimeoutError names `what`."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"process died while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:g}s")
        time.sleep(interval)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition; quick, no validation."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


# -- the exporter process --------------------------------------------------------------------------------------------

def exporter_config(sim: RegionSimulator, *, port: int, interval: str = "15s", timeout: str = "5s",
                    kinds: Sequence[str] = ("tcp", "https"), cache_path: Path | None = None,
                    concurrency: int | None = None) -> dict[str, Any]:
    """A config probing every simulated region with each probe kind (one target per kind); `concurrency`
    None keeps the exporter's default."""
    endpoints = {region: sim.endpoint_url(region) for region in sim.regions}
    targets = []
    for kind in kinds:
        target: dict[str, Any] = {
            "name": f"sim-{kind}", "service": "bedrock-runtime", "probe": kind, "regions": list(sim.regions),
            "endpoints": endpoints, "interval": interval, "timeout": timeout,
        }
        if kind == "https":
            target["options"] = {"ca_file": str(sim.ca_file)}
        targets.append(target)
    cache: dict[str, Any] = {"type": "none"} if cache_path is None else {"type": "file", "path": str(cache_path)}
    config: dict[str, Any] = {"listen": f"127.0.0.1:{port}", "cache": cache, "log_level": "warning",
                              "targets": targets}
    if concurrency is not None:
        config["concurrency"] = concurrency
    return config


def default_concurrency() -> int:
    """The exporter's default `concurrency` (config.py), so the text never goes stale."""
    from region_latency.config import Config

    return int(Config.model_fields["concurrency"].default)


class ExporterProcess:
    """`python -m region_latency serve` inside the simulator's client namespace, with its pid and log."""

    def __init__(self, sim: RegionSimulator, config: Mapping[str, Any], workdir: Path, name: str = "exporter",
                 env: Mapping[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = int(str(config["listen"]).rsplit(":", 1)[1])
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.started_at = time.monotonic()
        self.proc = sim.run_in_client(
            [sys.executable, "-m", "region_latency", "serve", "--config", str(self.config_path),
             "--web.enable-lifecycle"],  # bench/scrape.py reloads over HTTP
            stdout=subprocess.DEVNULL, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid  # `ip netns exec` execs the command: same pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str, timeout: float = 10.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        return http_get(self.port, path, timeout=timeout, headers=headers)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = self.get("/metrics")
        if status != 200:
            raise OSError(f"/metrics answered {status}")
        return parse_samples(body.decode())

    def wait_healthy(self, timeout: float = 60.0) -> float:
        return wait_until(lambda: self.get("/-/healthy", timeout=2)[0] == 200, timeout, "exporter healthy",
                          alive=self.alive)

    def stop(self) -> int:
        stop_process(self.proc, 15)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()


def sum_samples(samples: Iterable[tuple[str, dict[str, str], float]], name: str,
                **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def write_raw(key: str, raw: Mapping[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{key}.json"
    path.write_text(json.dumps(raw, indent=2, default=str) + "\n")
    return path


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def start_worker(sim: RegionSimulator, module: str, payload: Mapping[str, Any], log_path: Path
                 ) -> subprocess.Popen[str]:
    """`python -m MODULE --worker JSON` inside the client namespace; it prints one JSON document on stdout.

    A process of its own per measuring loop: threads of one Python process would wait on each other's GIL
    (up to the 5 ms switch interval) between a packet's arrival and the timestamp, which is the error we measure.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log_path.open("w") as log:
        return sim.run_in_client([sys.executable, "-m", module, "--worker", json.dumps(payload)],
                                 stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env=env)


def collect_worker(proc: subprocess.Popen[str], log_path: Path, timeout: float) -> Any:
    """Wait for a worker and decode its JSON; RuntimeError with its log when it failed."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"worker did not finish within {timeout:g}s; log: {log_path}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {log_path.read_text()[-2000:]}")
    return json.loads(out)


def bench_main(argv: Sequence[str] | None, *, module: str, doc: str | None, option: tuple[str, float, str],
               run: Callable[[Any], Any], worker: Callable[[Any], Any] | None = None) -> int:
    """The command line every benchmark module shares: one numeric option, `--no-report`, and (for
    benchmarks that start worker processes) a hidden `--worker JSON` entry point.

    `option` is (flag, default, help); `run(value)` returns the BenchResult that `bench.report.finish`
    prints and, without --no-report, writes to BENCHMARKS.md.
    """
    import argparse

    flag, default, text = option
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n\n")[0])
    parser.add_argument(flag, dest="value", type=type(default), default=default, help=f"{text} (default {default})")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    if worker is not None:
        parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if worker is not None and args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from bench.report import finish

    return finish(run(args.value), write=not args.no_report)
