"""Simulated AWS regions with true network delays, for tests, benchmarks and demos (see docs/NETSIM.md).

    from region_latency_devkit.netsim import RegionSimulator, RegionSpec

    with RegionSimulator({"us-east-1": RegionSpec(rtt=0.020)}) as sim:
        sim.call_in_client(some_probe, sim.endpoint_url("us-east-1"), sim.ca_file)
"""

from region_latency_devkit.netsim.simulator import RegionSimulator, SimulatorError, Stats
from region_latency_devkit.netsim.spec import RegionSpec, parse_duration, parse_region

__all__ = ["RegionSimulator", "RegionSpec", "SimulatorError", "Stats", "parse_duration", "parse_region"]
