"""Which series a target publishes beyond the core ones: the cardinality options of a target's `metrics:` section.

A typed, frozen model read by the configuration schema (config.py), by the target's state (the histogram's buckets)
and by the family table (export/families.py, which families and series to show). The defaults keep a target within
20 series per (target, region) pair while publishing everything the shipped dashboards and alert rules query; the
budget per family and option is in docs/METRICS.md, the keys in docs/CONFIG.md.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Every phase a probe may time, in the order /metrics shows them.
PHASES = ("dns", "connect", "tls", "ttfb", "total")

# Raw-sample histogram buckets (seconds) by default: five bounds where inter-region round trips live (a vantage
# point's own region, its continent, across an ocean, half the world away): 8 series per pair with +Inf, count and
# sum. Finer buckets are a per-target choice (`metrics.histogram.buckets`), paid per pair.
DEFAULT_BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5)
# Phases published by default: what the dashboards' phase panel shows of an https probe, without `dns` (the local
# resolver's time, not the region's) and `total` (the sample itself plus the body: the histogram has it).
DEFAULT_PHASES: tuple[str, ...] = ("connect", "tls", "ttfb")
MAX_BUCKETS = 64


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class HistogramOptions(_Options):
    """region_latency_sample_seconds: on or off, and its bucket bounds (seconds, increasing; +Inf is implied)."""

    enabled: bool = True
    buckets: tuple[float, ...] = DEFAULT_BUCKETS

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`histogram: false` (off), `histogram: true` (defaults), `histogram: [0.01, 0.1]` (these buckets)."""
        if isinstance(data, bool):
            return {"enabled": data}
        if isinstance(data, list | tuple):
            return {"buckets": data}
        return data

    @field_validator("buckets", mode="before")
    @classmethod
    def _buckets(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("buckets must be a non-empty list of upper bounds in seconds, e.g. [0.05, 0.1, 0.25]")
        if len(value) > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS} buckets (got {len(value)}): each is one series per region")
        bounds = []
        for bound in value:
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound) \
                    or bound <= 0:
                raise ValueError(f"bucket bound {bound!r} is not a positive number of seconds (+Inf is implied)")
            bounds.append(float(bound))
        if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
            raise ValueError(f"bucket bounds must increase strictly (got {list(value)})")
        return tuple(bounds)


class MetricsOptions(_Options):
    """A target's `metrics:` section: the optional families and how many series each one adds per region."""

    histogram: HistogramOptions = Field(default_factory=HistogramOptions)
    phases: tuple[str, ...] = DEFAULT_PHASES
    region_state: Literal["current", "all"] = "current"
    ranking_info: int | Literal["all"] = Field(default=1)
    probe_details: bool = False

    @field_validator("histogram", mode="before")
    @classmethod
    def _histogram(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: Any) -> Any:
        """`true`: every phase the probe times; `false` / `[]`: none; else a list of phase names."""
        if value is True:
            return PHASES
        if value is False or value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise ValueError(f"phases must be true, false or a list of {', '.join(PHASES)} (got {value!r})")
        for phase in value:
            if phase not in PHASES:
                raise ValueError(f"unknown phase {phase!r} (use {', '.join(PHASES)})")
        return tuple(p for p in PHASES if p in value)  # the table's order, each once

    @field_validator("ranking_info", mode="before")
    @classmethod
    def _ranking_info(cls, value: Any) -> Any:
        if value == "all":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"ranking_info must be a number of ranked positions (0 for none) or 'all' "
                             f"(got {value!r})")
        return value

    def ranked_positions(self, ranked: int) -> int:
        """How many of `ranked` positions region_latency_ranking_info shows."""
        return ranked if self.ranking_info == "all" else min(ranked, self.ranking_info)


DEFAULT_METRICS = MetricsOptions()
ALL_METRICS = MetricsOptions.model_validate({"phases": True, "region_state": "all", "ranking_info": "all",
                                             "probe_details": True})
"""Every optional series on (the histogram at its default buckets): every phase, all four states, the whole ranking,
status code and last probe time, as before issue 15 (which also had 19 bucket bounds)."""
