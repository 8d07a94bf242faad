"""Property fuzz of cache documents and raw bytes over both backends (a file, a real redis-server).

Whatever is stored: the tracker starts without raising, every good region is loaded with its values and
nothing else is, what could not be loaded is kept aside byte for byte, and the next save succeeds.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from region_latency.cache import CACHE_KEY, Cache, FileCache
from region_latency.cache.redis import RedisCache
from region_latency.tracker import RegionLatencyTracker
from tests.support.redis_server import RedisServer, redis_binary

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1", "sa-east-1",
           "me-south-1", "af-south-1", "ca-central-1"]
STAMP = 1_700_000_000.0
BAD_NUMBERS = ["-0.5", "NaN", "Infinity", "-Infinity", "1e309", "-1e309", "9" * 400, "9" * 4301, "1e10",
               '"fast"', "true", "null", "[0.1]", '{"a": 1}', '""']
BAD_COUNTS = ["0", "-3", "1.5", "9" * 4300, str(2**53 + 1), "NaN", '"7"', "false", "null", "[]"]
BAD_STAMPS = ["NaN", "Infinity", "-Infinity", "1e309", "-1", "1e12", '"yesterday"', "true", "[]", "9" * 5000]


@dataclass(frozen=True)
class Token:
    """A JSON value as text (so it can hold what json.dumps never writes) and, when valid, its value."""

    text: str
    value: float | int | None
    good: bool


def good_float(low: float, high: float) -> st.SearchStrategy[Token]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(lambda v: Token(repr(v), v, True))


emas = st.one_of(good_float(0, 30), st.integers(0, 5).map(lambda v: Token(str(v), v, True)),
                 st.sampled_from(BAD_NUMBERS).map(lambda t: Token(t, None, False)))
counts = st.one_of(st.integers(1, 2**53).map(lambda v: Token(str(v), v, True)),
                   st.sampled_from(BAD_COUNTS).map(lambda t: Token(t, None, False)))
stamps = st.one_of(good_float(1e9, 2e9), st.sampled_from(BAD_STAMPS).map(lambda t: Token(t, None, False)))


@dataclass(frozen=True)
class FuzzDocument:
    raw: bytes
    good: dict[str, tuple[float, int, float | None]]  # region -> (ema, samples, last_sample_at)
    flawless: bool


@st.composite
def documents(draw: st.DrawFn) -> FuzzDocument:
    """A tracker document where any value may be bad; `good` is what a correct loader keeps."""
    names = draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=len(REGIONS)))
    updated = draw(st.none() | stamps)
    metrics, count_parts, stamp_parts = [], [], []
    good: dict[str, tuple[float, int, float | None]] = {}
    flawless = updated is None or updated.good
    for name in names:
        ema = draw(emas)
        count = draw(st.none() | counts)
        stamp = draw(st.none() | stamps)
        metrics.append(f'"{name}": {ema.text}')
        if count is not None:
            count_parts.append(f'"{name}": {count.text}')
        if stamp is not None:
            stamp_parts.append(f'"{name}": {stamp.text}')
        ok = ema.good and (count is None or count.good) and (stamp is None or stamp.good)
        flawless &= ok
        if ok:
            assert ema.value is not None
            fallback = updated.value if updated is not None and updated.good else None
            last = stamp.value if stamp is not None else fallback
            good[name] = (float(ema.value), int(count.value) if count and count.value else 1,
                          None if last is None else float(last))
    body = f'"metrics": {{{", ".join(metrics)}}}, "counts": {{{", ".join(count_parts)}}}'
    with_stamps: bool = draw(st.booleans())
    if stamp_parts or with_stamps:
        body += f', "last_sample_at": {{{", ".join(stamp_parts)}}}'
    if updated is not None:
        body += f', "updated_at": {updated.text}'
    return FuzzDocument(f"{{{body}}}".encode(), good, flawless)


@st.composite
def raw_bytes(draw: st.DrawFn) -> bytes:
    """Anything at all: random bytes, or a document cut, flipped or wrapped in deep nesting."""
    doc = b'{"' + CACHE_KEY.encode() + b'": ' + draw(documents()).raw + b"}"
    kind = draw(st.sampled_from(["random", "cut", "flip", "deep", "utf8"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "cut":
        return doc[: draw(st.integers(0, max(0, len(doc) - 1)))]
    if kind == "flip":
        at = draw(st.integers(0, len(doc) - 1))
        return doc[:at] + bytes([draw(st.integers(0, 255))]) + doc[at + 1:]
    if kind == "deep":
        depth = draw(st.integers(30, 3000))
        return b'{"' + CACHE_KEY.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"
    return doc[:-2] + b'"\xff\xfe"' + doc[-2:]


class Backend:
    """One place to put raw bytes and find what was kept aside, for a file or a Redis key."""

    name: str

    def wrap(self, document: bytes) -> bytes:
        """What is stored for a tracker document: the file holds it under its key, Redis as the value."""
        return document

    def put(self, raw: bytes) -> Cache:
        raise NotImplementedError

    def kept(self) -> list[bytes]:
        raise NotImplementedError

    def stored(self) -> bytes | None:
        raise NotImplementedError


class FileBackend(Backend):
    name = "file"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cache-fuzz-"))
        self.path = self.dir / "latencies.json"

    def wrap(self, document: bytes) -> bytes:
        return b'{"' + CACHE_KEY.encode() + b'": ' + document + b"}"

    def put(self, raw: bytes) -> Cache:
        self.path.write_bytes(raw)
        return FileCache(self.path)

    def kept(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dir.glob("latencies.json.corrupt-*"))]

    def stored(self) -> bytes | None:
        return self.path.read_bytes() if self.path.exists() else None


class RedisBackend(Backend):
    name = "redis"
    counter = itertools.count()

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"fuzz{next(self.counter)}:"
        self.client = redis.Redis.from_url(url)

    def put(self, raw: bytes) -> Cache:
        self.client.set(self.prefix + CACHE_KEY, raw)
        return RedisCache(self.url, key_prefix=self.prefix)

    def kept(self) -> list[bytes]:
        return [v for v in self.client.lrange(self.prefix + CACHE_KEY + ".corrupt", 0, -1) if isinstance(v, bytes)]

    def stored(self) -> bytes | None:
        value = self.client.get(self.prefix + CACHE_KEY)
        return value if isinstance(value, bytes) else None


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if redis_binary() is None:
        pytest.skip("redis-server not installed (./test.sh installs it as root)")
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.integration)])
def backend_factory(request: pytest.FixtureRequest) -> Callable[[], Backend]:
    if request.param == "file":
        return FileBackend
    url = request.getfixturevalue("redis_url")
    return lambda: RedisBackend(url)


def start_and_save(backend: Backend, raw: bytes) -> RegionLatencyTracker:
    """Start a tracker on `raw`, add a sample, save; asserts that the save worked."""
    tracker = RegionLatencyTracker(cache=backend.put(raw), save_interval=0, clock=lambda: STAMP)
    loaded = tracker.snapshot().regions
    for stats in loaded.values():  # whatever loaded is valid
        assert stats.ema is not None and math.isfinite(stats.ema) and 0 <= stats.ema <= 1e9
        assert 1 <= stats.samples <= 2**53
        assert stats.last_sample_at is None or (math.isfinite(stats.last_sample_at) and stats.last_sample_at >= 0)
    tracker.update_latency("zz-fuzz-1", 0.5)
    tracker.flush()
    assert tracker.saver is not None and tracker.saver.status.last_save_ok is True
    stored = backend.stored()
    assert stored is not None
    saved = json.loads(stored)  # strict JSON again: no NaN, no huge numbers
    document = saved[CACHE_KEY] if backend.name == "file" else saved
    assert document["metrics"]["zz-fuzz-1"] == 0.5
    assert set(document["metrics"]) == set(loaded) | {"zz-fuzz-1"}
    tracker.close()
    return tracker


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@fuzz_settings(1000)
@given(doc=documents())
def test_documents_load_what_is_good_and_keep_the_rest(backend_factory: Callable[[], Backend],
                                                       doc: FuzzDocument) -> None:
    backend = backend_factory()
    stored = backend.wrap(doc.raw)
    tracker = start_and_save(backend, stored)
    loaded = {r: (s.ema, s.samples, s.last_sample_at) for r, s in tracker.snapshot().regions.items()
              if r != "zz-fuzz-1"}
    assert loaded == {r: (e, n, s) for r, (e, n, s) in doc.good.items()}
    if not doc.flawless:
        assert backend.kept() == [stored]  # the original, byte for byte, once
    else:
        assert backend.kept() == []


@fuzz_settings(300)
@given(raw=raw_bytes())
def test_any_bytes_start_the_tracker_and_are_kept_when_not_loadable(backend_factory: Callable[[], Backend],
                                                                    raw: bytes) -> None:
    backend = backend_factory()
    start_and_save(backend, raw)
    try:
        strict = json.loads(raw.decode("utf-8"), parse_constant=lambda c: 1 / 0)
        loadable = isinstance(strict, dict) or not raw.strip()
    except (ValueError, ZeroDivisionError, RecursionError):
        loadable = not raw.strip()
    if not loadable:
        assert raw in backend.kept()
    assert len(backend.kept()) <= 5
