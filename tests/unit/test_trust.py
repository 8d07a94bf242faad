"""The trust check (region_latency.trust): the region location table, the physical bound, and the check itself."""

from __future__ import annotations

import math

import pytest

from region_latency import regions as botocore_regions
from region_latency.trust import (
    FIBRE_KM_PER_SECOND,
    REGION_LOCATIONS,
    UNLOCATED,
    UntrustedReason,
    check,
    min_round_trip,
)


def test_the_constant_is_light_in_single_mode_fibre() -> None:
    """c / 1.4676 (SMF-28's group index at 1310 nm): about 0.98 ms of round trip per 100 km."""
    assert abs(FIBRE_KM_PER_SECOND - 204_274) < 1
    assert abs(2 * 100 / FIBRE_KM_PER_SECOND - 0.000979) < 1e-6


def test_every_table_entry_is_a_region_botocore_knows_with_sane_coordinates() -> None:
    known = {region for partition in ("aws", "aws-cn", "aws-eusc")
             for region in botocore_regions.partition_regions(partition)}
    assert set(REGION_LOCATIONS) <= known, set(REGION_LOCATIONS) - known
    for region, where in REGION_LOCATIONS.items():
        assert -90 <= where.latitude <= 90 and -180 <= where.longitude <= 180, region
        assert 0 < where.radius_km <= 300, region
        assert where.place, region


def test_every_commercial_region_named_after_a_place_is_in_the_table() -> None:
    """Only regions whose location is not known to one place are left out (UNLOCATED; GovCloud and the ISO
    partitions are other partitions): a new commercial region shows up here, to be added with its source."""
    assert not UNLOCATED & set(REGION_LOCATIONS)
    missing = set(botocore_regions.partition_regions("aws")) - set(REGION_LOCATIONS) - UNLOCATED
    assert not missing, f"add {sorted(missing)} to trust.REGION_LOCATIONS (with the place it is named after)"


@pytest.mark.parametrize("region_a, region_b, km", [
    # Great-circle distances between the cities' centres, as published (rounded): a wrong coordinate shows here.
    ("eu-west-2", "eu-west-3", 344),  # London - Paris
    ("ap-northeast-1", "ap-northeast-3", 397),  # Tokyo - Osaka
    ("ap-southeast-2", "ap-southeast-4", 714),  # Sydney - Melbourne
    ("eu-central-1", "eu-central-2", 304),  # Frankfurt - Zurich
    ("ap-south-1", "ap-south-2", 621),  # Mumbai - Hyderabad
])
def test_distances_match_the_cities(region_a: str, region_b: str, km: float) -> None:
    a, b = REGION_LOCATIONS[region_a], REGION_LOCATIONS[region_b]
    expected = 2 * (km - a.radius_km - b.radius_km) / FIBRE_KM_PER_SECOND
    assert min_round_trip(region_a, region_b) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("region_a, region_b, typical", [
    # Typical round trips between regions over AWS's backbone (rounded down): the bound must stay well below real
    # paths, or a correct exporter would be flagged.
    ("us-east-1", "us-east-2", 0.011),
    ("us-east-1", "us-west-2", 0.060),
    ("us-east-1", "eu-west-1", 0.065),
    ("eu-central-1", "eu-west-1", 0.022),
    ("eu-west-2", "eu-west-3", 0.007),
    ("ap-northeast-1", "ap-northeast-3", 0.007),
    ("ap-southeast-2", "ap-southeast-4", 0.010),
    ("us-west-2", "ap-northeast-1", 0.095),
    ("eu-west-1", "ap-southeast-2", 0.250),
])
def test_the_bound_is_below_real_inter_region_round_trips(region_a: str, region_b: str, typical: float) -> None:
    bound = min_round_trip(region_a, region_b)
    assert bound is not None and bound < typical


def test_pairs_are_symmetric_and_a_region_is_zero_from_itself() -> None:
    assert min_round_trip("us-east-1", "eu-west-1") == min_round_trip("eu-west-1", "us-east-1")
    assert min_round_trip("us-east-1", "us-east-1") == 0.0


def test_regions_missing_from_the_table_are_skipped_not_guessed() -> None:
    assert min_round_trip("us-gov-west-1", "us-east-1") is None
    assert min_round_trip("local-1", "us-east-1") is None
    result = check({"local-1": 0.0001, "us-gov-west-1": 0.0001, "us-east-1": 0.0001})
    assert result.pairs_checked == 0 and result.trusted


def test_a_proxy_next_to_the_exporter_is_flagged_with_the_worst_pair() -> None:
    """Everything answers in about a millisecond: the pair furthest apart falls furthest below its bound."""
    emas = dict.fromkeys(["us-east-1", "eu-west-1", "ap-southeast-2", "eu-central-1"], 0.0012)
    result = check(emas)
    assert not result.trusted
    assert result.pairs_checked == 6
    violation = result.violation
    assert violation is not None
    assert violation.reason is UntrustedReason.FASTER_THAN_LIGHT
    assert (violation.region_a, violation.region_b) == ("eu-west-1", "ap-southeast-2")  # in the given order
    assert violation.measured == pytest.approx(0.0024)
    assert violation.bound == min_round_trip("eu-west-1", "ap-southeast-2")


def test_real_round_trips_from_anywhere_are_trusted() -> None:
    """From Frankfurt, and from Virginia: typical numbers pass, however near the exporter is to one region."""
    from_frankfurt = {"eu-central-1": 0.0015, "eu-west-1": 0.024, "us-east-1": 0.089, "us-west-2": 0.150,
                      "ap-southeast-2": 0.285, "ap-northeast-1": 0.230, "sa-east-1": 0.205}
    from_virginia = {"us-east-1": 0.0008, "us-east-2": 0.012, "eu-west-2": 0.076, "ap-south-1": 0.190,
                     "af-south-1": 0.230}
    for emas in (from_frankfurt, from_virginia):
        result = check(emas)
        assert result.trusted, result
        assert result.pairs_checked == math.comb(len(emas), 2)


def test_one_region_alone_checks_nothing() -> None:
    assert check({"us-east-1": 0.0001}).pairs_checked == 0
    assert check({}).trusted
