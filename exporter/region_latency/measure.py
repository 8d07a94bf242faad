"""The library's tracker: the core state class plus the plan's `measure_latency`, which probes once.

Kept apart from tracker.py so that the tracker (state and math) never imports the probes or botocore's
region data, which sit above it in the data flow; both are imported here only when a measurement runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from region_latency.tracker import LatencyTracker

if TYPE_CHECKING:
    from region_latency.probes.base import ProbeResult


class RegionLatencyTracker(LatencyTracker):
    """Tracks a latency EMA and sample count per AWS region, sorts regions fastest first, and measures.

    Everything of `region_latency.tracker.LatencyTracker` (the plan's `update_latency`, `get_latency`,
    `get_sorted_regions`, a cache, snapshots), plus `measure_latency` and `probe_once`.
    """

    def measure_latency(
        self,
        region: str,
        endpoint: str = "bedrock",
        *,
        probe: str = "https",
        timeout: float = 5.0,
        options: Mapping[str, Any] | None = None,
    ) -> float | None:
        """Measure `endpoint` (a botocore service name or a URL, e.g. https://…) in `region` once.

        Returns the latency in seconds and feeds it to `update_latency`, or returns None and
        counts a failure when the probe failed. What is timed is the probe's network window
        only (see docs/PROBES.md): client set-up, retries and result parsing are excluded.
        `options` are the probe kind's options (e.g. `{"ca_file": ...}`).
        """
        result = self.probe_once(region, endpoint, probe=probe, timeout=timeout, options=options)
        return result.latency

    def probe_once(
        self,
        region: str,
        endpoint: str = "bedrock",
        *,
        probe: str = "https",
        timeout: float = 5.0,
        options: Mapping[str, Any] | None = None,
        service: str | None = None,
    ) -> ProbeResult:
        """Like `measure_latency`, but returns the whole probe result (phases, error kind).

        When `endpoint` is a URL, `service` names the botocore service behind it (the `api`
        probe needs it to sign its call).
        """
        from region_latency.probes import check_target, get_probe
        from region_latency.probes.base import Target

        if "://" in endpoint:
            target = Target(service=service or "custom", region=region, url=endpoint, options=dict(options or {}))
        else:
            from region_latency.regions import endpoint_url  # botocore's data, only when a name is given

            target = Target(service=endpoint, region=region, url=endpoint_url(endpoint, region),
                            options=dict(options or {}))
        check_target(probe, target)
        result = get_probe(probe)(target, timeout)
        self.record(region, result)
        return result
