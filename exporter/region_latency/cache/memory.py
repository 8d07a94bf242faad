"""Caches that hold nothing themselves: a dict for tests, and a key prefix for trackers sharing one cache."""

from __future__ import annotations

from typing import Any

from region_latency.cache.base import Cache, PreservingCache

KEEP_CORRUPT = 5


class MemoryCache:
    """A dict behind the Cache protocol: for tests and for processes that need no persistence.

    Values the tracker had to repair are kept, newest first, under `<key>.corrupt`.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def preserve_aside(self, key: str, reason: str) -> str | None:
        if key not in self._data:
            return None
        side = f"{key}.corrupt"
        kept = self._data.get(side)
        self._data[side] = [self._data[key], *(kept if isinstance(kept, list) else [])][:KEEP_CORRUPT]
        return side


class PrefixedCache:
    """One cache shared by several trackers: each sees its own keys under `prefix/`."""

    def __init__(self, inner: Cache, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def get(self, key: str) -> Any:
        return self.inner.get(f"{self.prefix}/{key}")

    def set(self, key: str, value: Any) -> None:
        self.inner.set(f"{self.prefix}/{key}", value)

    def preserve_aside(self, key: str, reason: str) -> str | None:
        if isinstance(self.inner, PreservingCache):
            return self.inner.preserve_aside(f"{self.prefix}/{key}", reason)
        return None
