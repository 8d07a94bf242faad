"""A Redis-backed cache, for several exporter replicas or applications sharing one ranking."""

from __future__ import annotations

import json
from typing import Any

from region_latency.cache.file import CacheError


class RedisCache:
    """Values stored as JSON strings under `key_prefix + key`.

    Needs the `redis` extra (`pip install region-latency-exporter[redis]`).
    """

    def __init__(self, url: str = "redis://localhost:6379/0", key_prefix: str = "region-latency:",
                 timeout: float = 2.0) -> None:
        try:
            import redis
        except ImportError:
            raise CacheError("the redis cache needs the 'redis' package: pip install "
                             "'region-latency-exporter[redis]'") from None
        self.url = url
        self.key_prefix = key_prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def get(self, key: str) -> Any:
        try:
            raw = self._client.get(self.key_prefix + key)
        except self._errors as exc:
            raise CacheError(f"redis {self.url}: {exc}") from None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheError(f"redis key {self.key_prefix + key} is not valid JSON: {exc}") from None

    def set(self, key: str, value: Any) -> None:
        payload = json.dumps(value, separators=(",", ":"), allow_nan=False)
        try:
            self._client.set(self.key_prefix + key, payload)
        except self._errors as exc:
            raise CacheError(f"redis {self.url}: {exc}") from None

    def close(self) -> None:
        self._client.close()
