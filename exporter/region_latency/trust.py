"""Whether a target's round trips can be real: a physics check on every pair of measured regions.

Light in optical fibre cannot carry a round trip between two regions faster than 2 x (their distance) / (its
speed). Wherever the exporter runs, its round trips to regions A and B cover at least that distance too (the
triangle inequality of the paths: exporter -> A and exporter -> B together span A -> B), so

    latency(A) + latency(B) >= 2 * distance(A, B) / FIBRE_KM_PER_SECOND

holds for every true measurement. When a pair's measured sum is below it, something near the exporter answered
for the regions (an HTTPS proxy, a NAT gateway or load balancer that terminates TCP, a VPN or tunnel endpoint):
the numbers are not the regions' and neither is the ranking made of them.

Every choice errs towards "trusted", so a flag is a certainty, not a guess:
- the speed is that of light in the fastest common fibre (below), where real routes are 1.5-3x longer than the
  great circle and every router adds time;
- the distance is the geodesic on the WGS84 ellipsoid (geographiclib), the shortest surface path, less each
  region's `radius_km`: how far its data centres may be from the coordinates in the table (a metro area for a
  region named after a city, more for one named after a state or a country);
- a region missing from the table is skipped, never guessed.

The check uses each region's EMA (what the ranking uses). Every probe kind's latency holds at least one round
trip to the region (a TCP handshake, a request's first byte, an API call), so the bound applies to all of them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from geographiclib.geodesic import Geodesic

SPEED_OF_LIGHT_KM_PER_SECOND = 299_792.458
FIBRE_GROUP_INDEX = 1.4676
"""Effective group index of standard single-mode fibre (Corning SMF-28 Ultra product information sheet: 1.4676 at
1310 nm, 1.4682 at 1550 nm). The smaller of the two is the faster light, so the bound errs low. Signals travel at
c / index in the fibre."""
FIBRE_KM_PER_SECOND = SPEED_OF_LIGHT_KM_PER_SECOND / FIBRE_GROUP_INDEX
"""About 204,274 km/s: at least 0.979 ms of round trip per 100 km of distance (the issue's "1 ms per 100 km")."""


class UntrustedReason(StrEnum):
    """Why a target's measurements cannot be trusted (the `reason` label of region_latency_measurements_untrusted)."""

    FASTER_THAN_LIGHT = "faster_than_light"  # two regions' round trips sum to less than light in fibre needs


@dataclass(frozen=True, slots=True)
class Location:
    """Where a region's data centres are, near enough: the named place, and how far from it they may be."""

    latitude: float  # degrees north
    longitude: float  # degrees east
    place: str  # the place the coordinates are of
    radius_km: float = 50.0  # the region's sites lie within this distance of the coordinates


REGION_LOCATIONS: Mapping[str, Location] = MappingProxyType({
    # Where each region is comes from its own name in botocore's endpoint data (the `description` of the region in
    # endpoints.json, e.g. "Asia Pacific (Tokyo)") and, where that names a state or a country, from AWS's public
    # announcement of the region; the coordinates are those of the named city's centre (GeoNames / Wikipedia),
    # rounded to 0.01 degrees. Regions whose location AWS does not publish (GovCloud, the ISO partitions) or that
    # are named after a country too large for one place (UNLOCATED) are absent: the check skips them.
    "af-south-1": Location(-33.92, 18.42, "Cape Town"),
    "ap-east-1": Location(22.32, 114.17, "Hong Kong"),
    "ap-east-2": Location(25.03, 121.57, "Taipei"),
    "ap-northeast-1": Location(35.68, 139.69, "Tokyo"),
    "ap-northeast-2": Location(37.57, 126.98, "Seoul"),
    "ap-northeast-3": Location(34.69, 135.50, "Osaka"),
    "ap-south-1": Location(19.08, 72.88, "Mumbai"),
    "ap-south-2": Location(17.39, 78.49, "Hyderabad"),
    "ap-southeast-1": Location(1.35, 103.82, "Singapore"),
    "ap-southeast-2": Location(-33.87, 151.21, "Sydney"),
    "ap-southeast-3": Location(-6.21, 106.85, "Jakarta"),
    "ap-southeast-4": Location(-37.81, 144.96, "Melbourne"),
    "ap-southeast-5": Location(3.14, 101.69, "Kuala Lumpur (region named Malaysia)", 150.0),
    "ap-southeast-6": Location(-36.85, 174.76, "Auckland (region named New Zealand)", 150.0),
    "ap-southeast-7": Location(13.76, 100.50, "Bangkok (region named Thailand)", 150.0),
    "ca-central-1": Location(45.50, -73.57, "Montreal (region named Canada Central)", 100.0),
    "ca-west-1": Location(51.05, -114.07, "Calgary"),
    "cn-north-1": Location(39.90, 116.41, "Beijing", 100.0),
    "cn-northwest-1": Location(38.49, 106.23, "Yinchuan (region named Ningxia)", 250.0),
    "eu-central-1": Location(50.11, 8.68, "Frankfurt"),
    "eu-central-2": Location(47.37, 8.54, "Zurich"),
    "eu-north-1": Location(59.33, 18.07, "Stockholm", 150.0),
    "eu-south-1": Location(45.46, 9.19, "Milan"),
    "eu-south-2": Location(41.65, -0.88, "Zaragoza (region named Spain; announced for Aragon)", 200.0),
    "eu-west-1": Location(53.35, -6.26, "Dublin (region named Ireland)", 100.0),
    "eu-west-2": Location(51.51, -0.13, "London"),
    "eu-west-3": Location(48.86, 2.35, "Paris"),
    "eusc-de-east-1": Location(52.52, 13.40, "Berlin (region named Germany; announced for Brandenburg)", 150.0),
    "il-central-1": Location(32.09, 34.78, "Tel Aviv"),
    "me-central-1": Location(25.20, 55.27, "Dubai (region named UAE)", 200.0),
    "me-south-1": Location(26.23, 50.59, "Manama (region named Bahrain)", 100.0),
    "mx-central-1": Location(20.59, -100.39, "Queretaro (region named Mexico Central)", 150.0),
    "sa-east-1": Location(-23.55, -46.63, "Sao Paulo", 100.0),
    "sa-west-1": Location(-33.45, -70.67, "Santiago (region named Chile)", 150.0),
    "us-east-1": Location(39.04, -77.49, "Ashburn (region named N. Virginia)", 100.0),
    "us-east-2": Location(39.96, -83.00, "Columbus (region named Ohio)", 100.0),
    "us-west-1": Location(37.34, -121.89, "San Jose (region named N. California)", 150.0),
    "us-west-2": Location(45.84, -119.70, "Boardman (region named Oregon)", 300.0),
})


UNLOCATED: frozenset[str] = frozenset({
    "me-west-1",  # "Middle East (Saudi Arabia)": Riyadh and Jeddah are 850 km apart; no site published
})
"""Commercial regions deliberately left out of REGION_LOCATIONS (a test holds every other one in it)."""


@functools.lru_cache(maxsize=4096)
def min_round_trip(region_a: str, region_b: str) -> float | None:
    """The least round trip (seconds) light in fibre needs between the two regions' sites; None when either
    region is not in REGION_LOCATIONS."""
    a, b = REGION_LOCATIONS.get(region_a), REGION_LOCATIONS.get(region_b)
    if a is None or b is None:
        return None
    metres: float = Geodesic.WGS84.Inverse(a.latitude, a.longitude, b.latitude, b.longitude)["s12"]
    km = max(0.0, metres / 1000.0 - a.radius_km - b.radius_km)
    return 2.0 * km / FIBRE_KM_PER_SECOND


@dataclass(frozen=True, slots=True)
class Violation:
    """The pair whose measured round trips fall furthest below what light in fibre needs between them."""

    reason: UntrustedReason
    region_a: str  # the two regions in the target's order
    region_b: str
    measured: float  # latency(a) + latency(b), seconds
    bound: float  # the least round trip between a and b, seconds


@dataclass(frozen=True, slots=True)
class TrustCheck:
    """The outcome for one target: how many region pairs could be checked, and the worst violation, if any."""

    pairs_checked: int
    violation: Violation | None

    @property
    def trusted(self) -> bool:
        return self.violation is None


NOTHING_CHECKED = TrustCheck(0, None)


def check(latencies: Mapping[str, float]) -> TrustCheck:
    """Check every pair of regions with a latency (seconds; in the mapping's order) that are both in the table.

    The worst violation is the pair with the largest shortfall (bound - measured).
    """
    known = [(region, value) for region, value in latencies.items() if region in REGION_LOCATIONS]
    pairs = 0
    worst: Violation | None = None
    for (a, latency_a), (b, latency_b) in itertools.combinations(known, 2):
        bound = min_round_trip(a, b)
        if bound is None:  # pragma: no cover - both are in the table
            continue
        pairs += 1
        measured = latency_a + latency_b
        if measured < bound and (worst is None or bound - measured > worst.bound - worst.measured):
            worst = Violation(UntrustedReason.FASTER_THAN_LIGHT, a, b, measured, bound)
    return TrustCheck(pairs, worst)


__all__ = [
    "FIBRE_KM_PER_SECOND",
    "NOTHING_CHECKED",
    "REGION_LOCATIONS",
    "UNLOCATED",
    "Location",
    "TrustCheck",
    "UntrustedReason",
    "Violation",
    "check",
    "min_round_trip",
]
