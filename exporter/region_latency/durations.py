"""Durations as the configuration writes them (`500ms`, `30s`, `1m`, `1m30s`; a bare number is seconds).

A leaf module: the config schema and the ranking settings both read durations, and neither imports the other.
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: str | float) -> float:
    """Seconds from `500ms`, `5s`, `1m`, `1h`, `1m30s` or a plain number of seconds.

    ValueError for anything else, negative or non-finite values.
    """
    hint = "(use e.g. 500ms, 30s, 1m)"
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} {hint}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"invalid duration {value!r} {hint}")
    else:
        raise ValueError(f"invalid duration {value!r} {hint}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time {hint}")
    return seconds


def positive_duration(value: str | float, maximum: float | None = None) -> float:
    """`parse_duration`, for settings where zero makes no sense (intervals, timeouts), optionally bounded."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than zero (got {value!r})")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"must be at most {format_duration(maximum)} (got {value!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of `500ms`, `30s`, `5m`, `1h` that is exact; for dumps that read like the input."""
    for unit in ("h", "m", "s"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    millis = round(seconds * 1000, 6)
    if seconds < 1 and millis == int(millis):
        return f"{int(millis)}ms"
    return f"{seconds:g}s"


__all__ = ["format_duration", "parse_duration", "positive_duration"]
