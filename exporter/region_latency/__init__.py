"""region_latency: measure latency to AWS regional endpoints, keep a per-region EMA, rank regions fastest first.

The library API is what `__all__` names: the tracker, the caches it persists to, passive instrumentation of
an application's own boto3 clients, and the tracker's OpenTelemetry instruments on the application's own
MeterProvider (`instrument_tracker`). Every other module (config, probes, scheduler, export, cli, ...) is the
exporter's inside and may change without notice.
"""

from typing import TYPE_CHECKING

from region_latency._version import __version__
from region_latency.cache import Cache, CacheError, FileCache, MemoryCache, PrefixedCache
from region_latency.cache.redis import RedisCache
from region_latency.measure import RegionLatencyTracker
from region_latency.tracker import RegionStats, TrackerSnapshot

if TYPE_CHECKING:
    from region_latency.otel import instrument_tracker
    from region_latency.passive import instrument


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
    "instrument_tracker",
]


def __getattr__(name: str) -> object:
    """`instrument` on first use: passive imports botocore (~100 ms), which `import region_latency` must not
    (the serve process leaves botocore to its config-resolving child)."""
    if name == "instrument":
        from region_latency.passive import instrument

        return instrument
    if name == "instrument_tracker":  # the OpenTelemetry SDK only for applications that ask for it
        from region_latency.otel import instrument_tracker

        return instrument_tracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
