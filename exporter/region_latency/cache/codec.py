"""Bytes <-> JSON values for the cache backends, with bounds: nothing they are given can raise anything else.

One decoder for the file and the Redis backend. Input that is not a JSON document within the bounds (size,
nesting depth, UTF-8) raises `CorruptDataError` with a one-line reason. Numbers JSON cannot carry back (NaN,
±Infinity, 1e309, integers longer than Python converts) are read as non-finite floats and reported as a
flaw, so the caller can load what is good, keep the original aside, and write back only what is valid.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from region_latency.cache.base import CacheError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""Larger input is not parsed (a tracker document for 35 regions is about 2 KB)."""
MAX_DEPTH = 32
"""Deeper nesting is refused on read and on write (a tracker document is 4 levels deep, with its key)."""


class CorruptDataError(CacheError):
    """Stored data that cannot be loaded at all; the message is the reason, without the file or key."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A parsed document; `flaw` names numbers that were read as non-finite floats, or is None."""

    value: Any
    flaw: str | None


def loads(raw: bytes | str) -> Decoded:
    """Parse `raw` as one JSON document within the bounds, or raise CorruptDataError saying why not."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CorruptDataError(f"is larger than {MAX_DOCUMENT_BYTES} bytes ({len(raw)} bytes)")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptDataError(f"is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    flaws: list[str] = []
    int_digits = sys.get_int_max_str_digits() or None

    def constant(name: str) -> float:
        flaws.append(name)
        return float(name)

    def parse_float(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            flaws.append(f"{_short(token)} (out of range)")
        return value

    def parse_int(token: str) -> int | float:
        if int_digits is not None and len(token.lstrip("-")) > int_digits:
            flaws.append(f"a {len(token.lstrip('-'))}-digit integer")
            return -math.inf if token.startswith("-") else math.inf
        return int(token)

    try:
        value = json.loads(text, parse_constant=constant, parse_float=parse_float, parse_int=parse_int)
    except RecursionError:
        raise CorruptDataError(f"is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError is one
        raise CorruptDataError(f"is not valid JSON: {_short(str(exc), 120)}") from None
    if depth(value) > MAX_DEPTH:
        raise CorruptDataError(f"is nested deeper than {MAX_DEPTH} levels")
    unique = list(dict.fromkeys(flaws))
    flaw = None
    if unique:
        more = f" and {len(unique) - 3} more" if len(unique) > 3 else ""
        flaw = "holds numbers JSON cannot carry: " + ", ".join(unique[:3]) + more
    return Decoded(value, flaw)


def dumps(value: Any) -> str:
    """`value` as compact JSON that `loads` reads back unchanged, or CacheError saying why it cannot be."""
    if depth(value) > MAX_DEPTH:
        raise CacheError(f"value is nested deeper than {MAX_DEPTH} levels")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CacheError(f"value cannot be written as JSON: {_short(str(exc), 120)}") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise CacheError(f"value is larger than {MAX_DOCUMENT_BYTES} bytes as JSON")
    return text


def depth(value: Any) -> int:
    """Nesting depth of lists and dicts (a scalar is 0), without recursion; stops counting past MAX_DEPTH."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
