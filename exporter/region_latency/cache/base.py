"""What a cache is to the tracker: a store of JSON-able values by key, and the error it raises."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class CacheError(Exception):
    """The cache could not be read or written; the message says which file or key and why."""


class Cache(Protocol):
    """Anything with `get(key)` and `set(key, value)`: a dict-like store of JSON-able values."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


@runtime_checkable
class PreservingCache(Protocol):
    """A cache that can keep a copy of what is stored under `key` before it is overwritten.

    The tracker calls it when a document it loaded had parts it had to drop, so the next save does not
    destroy the only copy. Returns where the copy is (for the log), or None when there was nothing to keep.
    Optional: caches without it are still Caches.
    """

    def preserve_aside(self, key: str, reason: str) -> str | None: ...
