"""A Redis-backed cache, for several exporter replicas or applications sharing one ranking."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from region_latency.cache.base import CacheError
from region_latency.cache.codec import CorruptDataError, dumps, loads

KEEP_CORRUPT = 5
"""Values kept in the side list `<key>.corrupt` (newest first); older ones are trimmed."""

log = logging.getLogger(__name__)


class RedisCache:
    """Values stored as JSON strings under `key_prefix + key`.

    A value that cannot be loaded (or that the tracker had to repair) is first pushed, byte for byte, onto
    the list `key_prefix + key + ".corrupt"` (newest first, `keep_corrupt` kept), and only then can a save
    overwrite it. Needs the `redis` extra (`pip install region-latency-exporter[redis]`).
    """

    def __init__(self, url: str = "redis://localhost:6379/0", key_prefix: str = "region-latency:",
                 timeout: float = 2.0, *, keep_corrupt: int = KEEP_CORRUPT) -> None:
        try:
            import redis
        except ImportError:
            raise CacheError("the redis cache needs the 'redis' package: pip install "
                             "'region-latency-exporter[redis]'") from None
        self.url = url
        self.key_prefix = key_prefix
        self.keep_corrupt = max(1, keep_corrupt)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._loaded: dict[str, bytes] = {}  # raw values last read, until written over or kept aside
        self._kept: dict[str, bytes] = {}  # digest of the last value kept aside per Redis key: kept once
        self._lock = threading.Lock()

    def _read(self, name: str) -> bytes | None:
        """The raw value under `name` (None when absent); CacheError when Redis cannot be reached."""
        try:
            raw = self._client.get(name)
        except self._errors as exc:
            raise CacheError(f"redis {self.url}: {exc}") from None
        assert raw is None or isinstance(raw, bytes)
        return raw

    def get(self, key: str) -> Any:
        name = self.key_prefix + key
        raw = self._read(name)
        if raw is None:
            return None
        try:
            decoded = loads(raw)
        except CorruptDataError as exc:
            side = self._keep(name, raw)
            raise CacheError(f"redis key {name} {exc}; kept a copy in the list {side}") from None
        if decoded.flaw is not None:  # the next save rewrites what cannot be carried: keep the original first
            side = self._keep(name, raw)
            log.warning("redis key %s %s; kept a copy in the list %s", name, decoded.flaw, side)
        else:
            with self._lock:
                self._loaded[key] = raw
        return decoded.value

    def set(self, key: str, value: Any) -> None:
        payload = dumps(value)
        try:
            self._client.set(self.key_prefix + key, payload)
        except self._errors as exc:
            raise CacheError(f"redis {self.url}: {exc}") from None
        with self._lock:
            self._loaded.pop(key, None)

    def preserve_aside(self, key: str, reason: str) -> str | None:
        """Keep the value as it was read (or, if it was not, as it is now) before a save replaces it."""
        name = self.key_prefix + key
        with self._lock:
            raw = self._loaded.pop(key, None)
        if raw is None:
            raw = self._read(name)
            if raw is None:
                return None
        side = self._keep(name, raw)
        log.warning("redis key %s %s; kept a copy in the list %s", name, reason, side)
        return side

    def close(self) -> None:
        self._client.close()

    def _keep(self, name: str, raw: bytes) -> str:
        side = name + ".corrupt"
        with self._lock:
            if self._kept.get(name) == hashlib.sha256(raw).digest():
                return side  # this very value is already in the list
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.lpush(side, raw)
            pipe.ltrim(side, 0, self.keep_corrupt - 1)
            pipe.execute()
        except self._errors as exc:
            raise CacheError(f"redis {self.url}: cannot keep a copy of {name} in {side}: {exc}") from None
        with self._lock:
            self._kept[name] = hashlib.sha256(raw).digest()
        return side
