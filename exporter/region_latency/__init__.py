"""region_latency: measure latency to AWS regional endpoints, keep a per-region EMA, rank regions fastest first.

The library API is what `__all__` names: the tracker, the caches it persists to, and passive instrumentation of
an application's own boto3 clients. Every other module (config, probes, scheduler, export, cli, ...) is the
exporter's inside and may change without notice.
"""

from region_latency.cache import Cache, CacheError, FileCache, MemoryCache, PrefixedCache
from region_latency.cache.redis import RedisCache
from region_latency.passive import instrument
from region_latency.tracker import RegionLatencyTracker, RegionStats, TrackerSnapshot

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CacheError",
    "FileCache",
    "MemoryCache",
    "PrefixedCache",
    "RedisCache",
    "RegionLatencyTracker",
    "RegionStats",
    "TrackerSnapshot",
    "__version__",
    "instrument",
]
