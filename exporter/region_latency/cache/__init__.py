"""Where the tracker's state persists: the Cache protocol, the document format, the saver and the backends.

A cache is anything with `get(key)` / `set(key, value)` of JSON-able values. `RedisCache` lives in
`region_latency.cache.redis` (it needs the `redis` extra).
"""

from __future__ import annotations

from region_latency.cache.base import Cache, CacheError, PreservingCache
from region_latency.cache.document import CACHE_KEY, CachedRegion, decode_document, encode_document
from region_latency.cache.file import FileCache
from region_latency.cache.memory import MemoryCache, PrefixedCache
from region_latency.cache.saver import CacheSaver, SaveStatus

__all__ = [
    "CACHE_KEY",
    "Cache",
    "CacheError",
    "CacheSaver",
    "CachedRegion",
    "FileCache",
    "MemoryCache",
    "PrefixedCache",
    "PreservingCache",
    "SaveStatus",
    "decode_document",
    "encode_document",
]
