"""region_latency: measure latency to AWS regional endpoints, keep a per-region EMA, rank regions fastest first."""

from region_latency.measure import RegionLatencyTracker
from region_latency.tracker import RegionStats, TrackerSnapshot

__version__ = "0.1.0"

__all__ = ["RegionLatencyTracker", "RegionStats", "TrackerSnapshot", "__version__"]
