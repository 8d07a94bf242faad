"""RegionSimulator: simulated AWS regions with a known RTT on the packets themselves.

    with RegionSimulator({"us-east-1": RegionSpec(rtt=0.020), "eu-west-1": RegionSpec(rtt=0.080)}) as sim:
        sim.run_in_client(["curl", "--cacert", str(sim.ca_file), sim.endpoint_url("us-east-1")])

Layout (mode "netns"): two namespaces made for this instance, `rlsim-<pid>-<n>-c` (the client: 198.18.0.1 on a
TUN) and `rlsim-<pid>-<n>-r` (the regions: 198.19.x.y on its loopback, a second TUN towards the client). A worker
process holds both TUNs and delays every packet between them; another serves HTTPS/HTTP on each region address.
The root namespace gets no address and no route. Where namespaces cannot be made, mode "proxy" serves the
regions on 127.0.0.1 behind delaying TCP proxies instead (TCP handshakes are then not delayed).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from region_latency_devkit.netsim import netns
from region_latency_devkit.netsim.certs import hostname, make_certs
from region_latency_devkit.netsim.control import WorkerError, WorkerProcess
from region_latency_devkit.netsim.delayline import SPIN_NS
from region_latency_devkit.netsim.spec import RegionSpec
from region_latency_devkit.netsim.tun import MTU
from region_latency_devkit.process import stop_process

log = logging.getLogger("region_latency_devkit.netsim")
CLIENT_ADDRESS = "198.18.0.1"
CLIENT_DEV = "simc0"
REGIONS_DEV = "simr0"
Mode = Literal["auto", "netns", "proxy"]
T = TypeVar("T")


class SimulatorError(RuntimeError):
    """The simulator could not start (in the mode asked for), or a worker failed."""


def region_address(index: int) -> str:
    """198.19.0.1, 198.19.0.2, ... 198.19.0.254, 198.19.1.1, ...: the benchmarking range, never routed."""
    if not 0 <= index < 254 * 256:
        raise ValueError("too many regions")
    return f"198.19.{index // 254}.{index % 254 + 1}"


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since start (or the last reset); lateness in seconds. In proxy mode `forwarded` counts data chunks."""

    mode: str
    forwarded: int
    lost: int
    unrouted: int
    overflow: int
    queued: int
    lateness_samples: int
    lateness_p50: float | None
    lateness_p99: float | None
    lateness_max: float | None
    regions: Mapping[str, Mapping[str, Any]]


class RegionSimulator:
    """Simulated regions; a context manager that builds everything on enter and removes all of it on exit.

    `mode`: "auto" (namespaces if possible, else the proxy with a warning), "netns" (fail rather than fall
    back) or "proxy" (force the fallback, e.g. to test it).
    """

    def __init__(self, regions: Mapping[str, RegionSpec], *, mode: Mode = "auto", spin_us: int = SPIN_NS // 1000,
                 realtime_priority: int = 0, busy_read: bool = False) -> None:
        if not regions:
            raise ValueError("at least one region is needed")
        self._specs = dict(regions)
        self._addresses = {name: region_address(i) for i, name in enumerate(self._specs)}
        self._requested_mode = mode
        self._spin_ns = spin_us * 1000
        self._realtime = realtime_priority
        self._busy_read = busy_read  # the delay line polls its TUNs without sleeping (a core; accuracy runs)
        self.mode: Literal["netns", "proxy"] | None = None
        self.client_netns: str | None = None
        self.regions_netns: str | None = None
        self._tmp: Path | None = None
        self._ca_file: Path | None = None
        self._delayline: WorkerProcess | None = None
        self._servers: WorkerProcess | None = None
        self._ports: dict[str, dict[str, int]] = {}
        self._clients: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> RegionSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build namespaces, TUNs, workers and certificates; on any failure (even Ctrl-C) undo what was built."""
        if self._started:
            raise SimulatorError("already started")
        self._started = True
        atexit.register(self.close)
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="rlsim-"))
            self._tmp.chmod(0o711)  # clients run by another user may read ca.pem; server.pem stays 0600
            certs = make_certs(self._tmp, list(self._specs), list(self._addresses.values()))
            certs.server_file.chmod(0o600)
            self._ca_file = certs.ca_file
            mode = self._requested_mode
            if mode in ("auto", "netns"):
                ok, reason = netns.availability()
                if ok:
                    try:
                        self._start_netns(certs.server_file)
                        return
                    except (netns.NetnsError, WorkerError, OSError) as e:
                        if mode == "netns":
                            raise
                        reason = f"network namespaces failed ({e})"
                        self._stop_all()
                elif mode == "netns":
                    raise SimulatorError(f"cannot build network namespaces: {reason}")
                else:
                    reason = f"network namespaces unavailable ({reason})"
            else:
                reason = "proxy mode was requested"
            log.warning("region simulator: %s; using a delaying TCP proxy on 127.0.0.1, which CANNOT delay TCP "
                        "handshakes (connect times will be ~0; TLS and requests are delayed)", reason)
            self._start_proxy(certs.server_file)
        except BaseException:
            self.close()
            raise

    def _start_netns(self, server_file: Path) -> None:
        removed = netns.cleanup_leftovers()
        if removed:
            log.info("removed namespaces of dead simulators: %s", ", ".join(removed))
        self.client_netns, self.regions_netns = netns.new_names()
        netns.create(self.client_netns)
        netns.create(self.regions_netns)
        netns.ip_batch([f"addr add {a}/32 dev lo" for a in self._addresses.values()], netns=self.regions_netns)
        regions = [{"name": n, "address": self._addresses[n], "spec": s.as_dict()} for n, s in self._specs.items()]
        self._delayline = WorkerProcess("delayline")
        self._delayline.start({
            "client_ns": self.client_netns, "regions_ns": self.regions_netns, "client_dev": CLIENT_DEV,
            "regions_dev": REGIONS_DEV, "client_address": CLIENT_ADDRESS, "mtu": MTU, "spin_ns": self._spin_ns,
            "realtime": self._realtime, "busy_read": self._busy_read, "regions": regions,
        })
        self._servers = WorkerProcess("servers")
        self._servers.start({"mode": "netns", "regions_ns": self.regions_netns, "server_file": str(server_file),
                             "regions": regions})
        self._delayline.wait_ready()
        self._ports = self._servers.wait_ready()["ports"]
        self.mode = "netns"

    def _start_proxy(self, server_file: Path) -> None:
        regions = [{"name": n, "address": "127.0.0.1", "spec": s.as_dict()} for n, s in self._specs.items()]
        self._servers = WorkerProcess("servers")
        self._servers.start({"mode": "proxy", "server_file": str(server_file), "regions": regions})
        self._ports = self._servers.wait_ready()["ports"]
        self._addresses = dict.fromkeys(self._specs, "127.0.0.1")
        self.mode = "proxy"

    def _stop_all(self) -> None:
        for proc in self._clients:
            stop_process(proc, 2)
        self._clients.clear()
        for worker in (self._servers, self._delayline):
            if worker is not None:
                worker.stop()
        self._servers = self._delayline = None
        for name in (self.client_netns, self.regions_netns):
            if name:
                netns.delete(name)
        self.client_netns = self.regions_netns = None

    def close(self) -> None:
        """Stop processes started here, delete both namespaces (their TUNs go with them) and the temp files.

        Idempotent; a Ctrl-C or SIGTERM arriving meanwhile is held back until the teardown is complete.
        """
        with self._lock, _signals_deferred():
            atexit.unregister(self.close)
            self._stop_all()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    # -- where things are --------------------------------------------------------------------------------------
    @property
    def regions(self) -> list[str]:
        return list(self._specs)

    @property
    def ca_file(self) -> Path:
        """PEM CA bundle that verifies every region's certificate (pass to httpx `verify=`, curl `--cacert`)."""
        if self._ca_file is None:
            raise SimulatorError("not started")
        return self._ca_file

    def address(self, region: str) -> str:
        """The region's IP address (198.19.x.y; 127.0.0.1 in proxy mode)."""
        return self._addresses[region]

    def hostname(self, region: str) -> str:
        """`<region>.sim.invalid`: in the certificate (usable as SNI / server_hostname), but not resolvable."""
        self._check(region)
        return hostname(region)

    def port(self, region: str, scheme: Literal["https", "http"] = "https") -> int:
        self._check(region)
        return self._ports[region][scheme]

    def endpoint_url(self, region: str, scheme: Literal["https", "http"] = "https") -> str:
        """`https://198.19.0.1` (the default port is left out), or `https://127.0.0.1:PORT` in proxy mode."""
        port = self.port(region, scheme)
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{self.address(region)}" + ("" if port == default else f":{port}")

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the delay-line and servers worker processes (for diagnostics: `ps`, `perf`, teardown checks)."""
        return [w.pid for w in (self._delayline, self._servers) if w is not None and w.pid is not None]

    def spec(self, region: str) -> RegionSpec:
        return self._specs[region]

    def _check(self, region: str) -> None:
        if region not in self._specs:
            raise KeyError(region)
        if self.mode is None:
            raise SimulatorError("not started")

    # -- changing the paths ------------------------------------------------------------------------------------
    def set_region(self, region: str, spec: RegionSpec | None = None, **changes: Any) -> RegionSpec:
        """Replace a region's spec (or change some fields); new packets see it at once, queued ones keep theirs."""
        self._check(region)
        new = (spec or self._specs[region]).with_changes(**changes)
        message = {"op": "set", "name": region, "address": self._addresses[region], "spec": new.as_dict()}
        for worker in (self._delayline, self._servers):
            if worker is not None:
                worker.request(message)
        self._specs[region] = new
        return new

    def set_rtt(self, region: str, rtt: float) -> RegionSpec:
        """Step the region's RTT (seconds)."""
        return self.set_region(region, rtt=rtt)

    def stats(self, reset: bool = False) -> Stats:
        """Packets forwarded/lost and release lateness of the delay line (of the proxy's timers in proxy mode)."""
        if self.mode is None:
            raise SimulatorError("not started")
        source = self._delayline if self.mode == "netns" else self._servers
        assert source is not None
        raw = source.request({"op": "stats", "reset": reset})["stats"]
        return Stats(mode=self.mode, forwarded=raw.get("forwarded", 0), lost=raw.get("lost", 0),
                     unrouted=raw.get("unrouted", 0), overflow=raw.get("overflow", 0), queued=raw.get("queued", 0),
                     lateness_samples=raw["lateness_samples"], lateness_p50=raw["lateness_p50"],
                     lateness_p99=raw["lateness_p99"], lateness_max=raw["lateness_max"], regions=raw["regions"])

    def handshakes(self, reset: bool = False) -> list[tuple[str, int, float, float]]:
        """The TCP handshakes the delay line carried (netns mode): (region address, client port, SYN read,
        SYN-ACK handed to the client's kernel), times in seconds on CLOCK_MONOTONIC (perf_counter's clock)."""
        if self.mode != "netns" or self._delayline is None:
            raise SimulatorError("handshake times need the delay line (netns mode)")
        answer = self._delayline.request({"op": "handshakes", "reset": reset}, timeout=30.0)["handshakes"]
        return [(str(a), int(p), float(syn), float(synack)) for a, p, syn, synack in answer]

    def server_stats(self) -> dict[str, dict[str, int]]:
        """Connections and requests each region's servers have seen."""
        assert self._servers is not None
        regions: dict[str, dict[str, int]] = self._servers.request({"op": "stats"})["stats"]["regions"]
        return regions

    # -- running clients ---------------------------------------------------------------------------------------
    def client_command(self, cmd: list[str]) -> list[str]:
        """CMD prefixed with `ip netns exec <client namespace>` (unchanged in proxy mode)."""
        if self.mode == "proxy":
            return list(cmd)
        if self.client_netns is None:
            raise SimulatorError("not started")
        return [netns.ip_binary(), "netns", "exec", self.client_netns, *cmd]

    def run_in_client(self, cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start CMD inside the client namespace; the simulator terminates it on close if it is still running."""
        proc = subprocess.Popen(self.client_command(cmd), **popen_kwargs)
        self._clients.append(proc)
        return proc

    @contextlib.contextmanager
    def in_client(self) -> Iterator[None]:
        """Put the calling thread into the client namespace for the block (sockets opened there stay in it).

        Prefer `call_in_client` unless the thread is yours alone: anything else the thread does meanwhile
        (logging to a socket, an event loop's new connections) happens in the client namespace too.
        """
        if self.mode == "proxy":
            yield
            return
        if self.client_netns is None:
            raise SimulatorError("not started")
        with netns.entered(self.client_netns):
            yield

    def call_in_client(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run fn(*args, **kwargs) on a new thread inside the client namespace and return its result."""
        if self.mode == "proxy":
            return fn(*args, **kwargs)
        if self.client_netns is None:
            raise SimulatorError("not started")
        return netns.call_in(self.client_netns, fn, *args, **kwargs)

    def describe(self) -> dict[str, Any]:
        """Everything a client needs, as plain data (the CLI's --json output, a demo config's source)."""
        return {
            "mode": self.mode,
            "client_netns": self.client_netns,
            "run_in_client": " ".join(self.client_command(["<command>"])),
            "ca_file": str(self.ca_file),
            "regions": {
                name: {
                    "address": self.address(name),
                    "hostname": self.hostname(name),
                    "endpoint_url": self.endpoint_url(name),
                    "http_url": self.endpoint_url(name, "http"),
                    "https_port": self.port(name, "https"),
                    "http_port": self.port(name, "http"),
                    **self._specs[name].as_dict(),
                }
                for name in self._specs
            },
        }


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them (so a second Ctrl-C cannot cut teardown)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not None:  # None: installed outside Python, could not be put back
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)
