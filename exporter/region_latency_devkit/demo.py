"""The demo: the real exporter probing simulated regions whose round-trip times are known.

Nothing here reaches AWS. With root, the simulator delays the packets themselves (TUN delay line
between network namespaces) and the exporter's probe threads run inside the simulator's client
namespace, while its HTTP server stays reachable on this host; without root it falls back to a
delay proxy that cannot delay TCP handshakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import trustme  # noqa: F401  (imported here so a missing `demo` extra fails at import, with the command's hint)

from region_latency.config import Config, parse_duration
from region_latency_devkit.netsim import RegionSimulator, RegionSpec, netns
from region_latency_devkit.netsim.spec import parse_region

# Round trips roughly as seen from Frankfurt, so the ranking looks like a real one.
DEFAULT_RTTS: Mapping[str, float] = {
    "eu-central-1": 0.006,
    "eu-west-1": 0.024,
    "us-east-1": 0.092,
    "us-west-2": 0.155,
    "sa-east-1": 0.205,
    "ap-northeast-1": 0.235,
}


def default_regions() -> dict[str, RegionSpec]:
    return {name: RegionSpec(rtt=rtt, jitter=rtt * 0.03) for name, rtt in DEFAULT_RTTS.items()}


def demo_config(sim: RegionSimulator, listen: str, interval: str = "5s") -> Config:
    """Two targets over the simulated regions: https (time to first byte) and tcp (connect)."""
    https = {region: sim.endpoint_url(region) for region in sim.regions}
    timeout = min(2.0, parse_duration(interval) * 0.8)
    targets = [
        {"name": "demo-https", "service": "bedrock-runtime", "probe": "https", "regions": [],
         "endpoints": https, "interval": interval, "timeout": timeout, "options": {"ca_file": str(sim.ca_file)}},
        {"name": "demo-tcp", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
         "endpoints": https, "interval": interval, "timeout": timeout},
    ]
    return Config.model_validate({"listen": listen, "cache": "none", "targets": targets})


def demo_simulator(regions: Sequence[str], proxy: bool) -> RegionSimulator:
    """The simulator for `--region NAME=RTT,...` texts (default: DEFAULT_RTTS); ValueError on bad text."""
    specs = dict(parse_region(text) for text in regions) if regions else default_regions()
    return RegionSimulator(specs, mode="proxy" if proxy else "auto")


def probe_thread_setup(sim: RegionSimulator) -> Callable[[], None] | None:
    """What each probe thread runs first: entering the client namespace when the packets are delayed."""
    client_ns = sim.client_netns if sim.mode == "netns" else None
    return (lambda: netns.enter(client_ns)) if client_ns else None
