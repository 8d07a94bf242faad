"""Caches the tracker persists to: anything with `get(key)` / `set(key, value)` of JSON-able values."""

from __future__ import annotations

from typing import Any

from region_latency.cache.file import CacheError, FileCache
from region_latency.tracker import Cache


class MemoryCache:
    """A dict behind the Cache protocol: for tests and for processes that need no persistence."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value


class PrefixedCache:
    """One cache shared by several trackers: each sees its own keys under `prefix/`."""

    def __init__(self, inner: Cache, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def get(self, key: str) -> Any:
        return self.inner.get(f"{self.prefix}/{key}")

    def set(self, key: str, value: Any) -> None:
        self.inner.set(f"{self.prefix}/{key}", value)


__all__ = ["Cache", "CacheError", "FileCache", "MemoryCache", "PrefixedCache"]
