"""What a simulated region looks like on the wire, and the `name=20ms,jitter=1ms` syntax the CLI accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$")
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}  # a bare number is seconds, as in the config


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """Path properties of one region; all times in seconds.

    `rtt` is the round trip added to every packet exchange (half on each direction). `jitter` is the most a
    round trip deviates from it: each one-way delay gets a uniform ±jitter/2, but packets of one region and
    direction are never reordered (a packet never leaves before the one in front of it). `loss` is the
    probability that one packet in one direction is dropped (1.0 = the region is dead: connects time out).
    `server_delay` is a fixed processing time the HTTP(S) servers wait before answering a request.
    """

    rtt: float
    jitter: float = 0.0
    loss: float = 0.0
    server_delay: float = 0.0

    def __post_init__(self) -> None:
        if not self.rtt >= 0 or not self.jitter >= 0 or not self.server_delay >= 0:
            raise ValueError(f"times must be >= 0: {self}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within [0, 1]: {self}")

    def with_changes(self, **changes: Any) -> RegionSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, float]:
        return {"rtt": self.rtt, "jitter": self.jitter, "loss": self.loss, "server_delay": self.server_delay}


def parse_duration(text: str) -> float:
    """`20ms`, `0.2s`, `150us` or a bare number of seconds (as everywhere in the config) -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 20ms, 0.2s, 150us)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_region(text: str) -> tuple[str, RegionSpec]:
    """`us-east-1=20ms[,jitter=1ms][,loss=0.01][,server_delay=2ms]` -> (name, spec)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ValueError(f"expected NAME=RTT[,jitter=..][,loss=..][,server_delay=..], got {text!r}")
    first, *options = rest.split(",")
    fields: dict[str, float] = {"rtt": parse_duration(first)}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in ("jitter", "loss", "server_delay"):
            raise ValueError(f"unknown region option {option!r} in {text!r}")
        fields[key] = float(value) if key == "loss" else parse_duration(value)
    return name, RegionSpec(**fields)
