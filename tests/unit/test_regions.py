"""region_latency.regions: region lists and endpoint URLs straight from botocore's data."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

from region_latency import regions
from region_latency.regions import available_regions, endpoint_url, known_services, partitions, region_partition

# --- region lists -------------------------------------------------------------------------------------------------


def test_bedrock_runtime_gap_is_filled_from_entries_under_bedrock() -> None:
    """botocore lists no regions for bedrock-runtime; its hosts are `bedrock-runtime-<region>` under bedrock."""
    session = botocore.session.Session()
    assert session.get_available_regions("bedrock-runtime") == []  # the gap this code exists for

    found = available_regions("bedrock-runtime")
    assert "us-east-1" in found and "us-west-2" in found and "eu-central-1" in found
    assert found == sorted(found)
    assert not [r for r in found if "fips" in r]  # bedrock-runtime-fips-<region> entries are variants, not regions
    assert set(found) <= set(available_regions("bedrock"))


def test_bedrock_runtime_gap_other_partitions() -> None:
    assert available_regions("bedrock-runtime", "aws-us-gov") == ["us-gov-east-1", "us-gov-west-1"]
    assert available_regions("bedrock-runtime", "aws-cn") == []


def test_prefixed_entries_fallback_is_general() -> None:
    """Any service, any parent: `<name>-<region>` keys count, fips/deprecated/non-region suffixes do not."""
    endpoints = {"partitions": [
        {"partition": "aws", "regionRegex": r"^(us|eu)\-\w+\-\d+$", "regions": {"us-east-1": {}},
         "services": {
             "parent": {"endpoints": {
                 "us-east-1": {},
                 "child-us-east-1": {"hostname": "child.us-east-1.amazonaws.com"},
                 "child-eu-west-9": {},  # not in `regions`, but matches the partition's pattern
                 "child-fips-us-east-1": {},
                 "child-us-west-2": {"deprecated": True},
                 "childish-us-east-2": {},
             }},
             "other": {"endpoints": {"child-us-east-2": {}}},
         }},
        {"partition": "aws-cn", "regionRegex": r"^cn\-\w+\-\d+$", "regions": {},
         "services": {"parent": {"endpoints": {"child-cn-north-1": {}}}}},
    ]}
    found = regions._prefixed_entries(endpoints, {"child"}, "aws")
    assert sorted(found) == ["eu-west-9", "us-east-1", "us-east-2"]


def test_regular_service_uses_botocore_list() -> None:
    session = botocore.session.Session()
    assert available_regions("ec2") == sorted(session.get_available_regions("ec2"))
    # a service name that differs from its endpoint prefix (elb -> elasticloadbalancing)
    assert "eu-west-1" in available_regions("elb")
    assert available_regions("s3", "aws-cn") == ["cn-north-1", "cn-northwest-1"]


def test_unknown_service_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"unknown service 'bedrok-runtime'.*did you mean bedrock-runtime"):
        available_regions("bedrok-runtime")
    with pytest.raises(ValueError, match="unknown service 'zzzzzz'"):
        endpoint_url("zzzzzz", "us-east-1")


def test_unknown_partition() -> None:
    with pytest.raises(ValueError, match=r"unknown partition 'awz' \(known: aws, aws-cn"):
        available_regions("s3", "awz")


def test_known_services_and_partitions() -> None:
    services = known_services()
    assert services == sorted(services)
    assert {"bedrock", "bedrock-runtime", "s3", "sts"} <= set(services)
    assert partitions()[0] == "aws" and {"aws-cn", "aws-us-gov"} <= set(partitions())


@pytest.mark.parametrize(("region", "partition"), [
    ("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"), ("xx-nowhere-1", "aws"),
])
def test_region_partition(region: str, partition: str) -> None:
    assert region_partition(region) == partition


# --- endpoint URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs", "url"), [
    (("bedrock-runtime", "us-east-1"), {}, "https://bedrock-runtime.us-east-1.amazonaws.com"),
    (("bedrock-runtime", "us-east-1"), {"fips": True}, "https://bedrock-runtime-fips.us-east-1.amazonaws.com"),
    (("bedrock-runtime", "us-east-1"), {"dualstack": True}, "https://bedrock-runtime.us-east-1.api.aws"),
    (("bedrock-runtime", "cn-north-1"), {}, "https://bedrock-runtime.cn-north-1.amazonaws.com.cn"),
    (("bedrock", "eu-west-1"), {}, "https://bedrock.eu-west-1.amazonaws.com"),
    (("sts", "us-east-1"), {}, "https://sts.us-east-1.amazonaws.com"),
    (("s3", "us-east-1"), {}, "https://s3.amazonaws.com"),
    (("mpa", "eu-west-1"), {}, "https://mpa.eu-west-1.api.aws"),
])
def test_endpoint_url(args: tuple[str, str], kwargs: dict[str, bool], url: str) -> None:
    assert endpoint_url(*args, **kwargs) == url


def test_every_bedrock_runtime_region_resolves() -> None:
    for region in available_regions("bedrock-runtime"):
        assert endpoint_url("bedrock-runtime", region) == f"https://bedrock-runtime.{region}.amazonaws.com"


def test_per_operation_endpoints() -> None:
    """neptune-graph's ruleset needs ApiType, which each operation fixes: the default is the majority's."""
    assert endpoint_url("neptune-graph", "eu-west-1") == "https://neptune-graph.eu-west-1.amazonaws.com"
    assert (endpoint_url("neptune-graph", "eu-west-1", operation="ExecuteQuery")
            == "https://eu-west-1.neptune-graph.amazonaws.com")
    with pytest.raises(ValueError, match=r"no operation 'ExecuteQuerry'.*did you mean ExecuteQuery"):
        endpoint_url("neptune-graph", "eu-west-1", operation="ExecuteQuerry")


def test_endpoint_errors() -> None:
    with pytest.raises(ValueError, match="invalid region name 'us east 1'"):
        endpoint_url("bedrock-runtime", "us east 1")
    with pytest.raises(ValueError, match=r"no endpoint for cloudfront-keyvaluestore in 'us-east-1': .*ARN"):
        endpoint_url("cloudfront-keyvaluestore", "us-east-1")


class _SentError(Exception):
    """Raised from before-send: carries the URL a real client was about to send to."""


def _capture(request: Any, **_: Any) -> None:
    raise _SentError(request.url)


CALLS = [
    ("bedrock-runtime", "invoke_model", {"modelId": "m", "body": b"{}"}),
    ("bedrock", "list_foundation_models", {}),
    ("sts", "get_caller_identity", {}),
    ("s3", "list_buckets", {}),
    ("dynamodb", "list_tables", {}),
    ("mpa", "list_approval_teams", {}),  # a ruleset on *.api.aws: client.meta.endpoint_url says amazonaws.com
]


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No AWS_* settings (endpoint overrides, fips flags, profiles) may leak into the comparison."""
    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


@pytest.mark.usefixtures("clean_aws_env")
@pytest.mark.parametrize("call", CALLS, ids=[c[0] for c in CALLS])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"])
@pytest.mark.parametrize(("fips", "dualstack"), [(False, False), (True, False), (False, True)])
def test_matches_the_url_a_real_client_sends_to(call: tuple[str, str, dict[str, Any]], region: str, fips: bool,
                                                dualstack: bool) -> None:
    """The ruleset resolution equals where botocore really sends a request (captured before it leaves)."""
    service, operation, params = call
    try:
        expected: str | None = endpoint_url(service, region, fips=fips, dualstack=dualstack)
    except ValueError:
        expected = None  # e.g. no FIPS in that partition: the real client must refuse as well
    session = botocore.session.Session()
    config = Config(use_fips_endpoint=fips, use_dualstack_endpoint=dualstack, retries={"max_attempts": 1})
    client = session.create_client(service, region_name=region, aws_access_key_id="x",
                                   aws_secret_access_key="y", config=config)
    client.meta.events.register("before-send", _capture)
    try:
        getattr(client, operation)(**params)
    except _SentError as sent:
        actual: str | None = str(sent).split("?")[0]
    except Exception:  # botocore refused to build an endpoint
        actual = None
    if expected is None:
        assert actual is None
    else:
        assert actual is not None and actual.rstrip("/").startswith(expected)


def test_concurrent_first_use_is_safe() -> None:
    """Eight threads resolving at once (lazy session, caches) all get the right answers."""
    regions._available_regions.cache_clear()
    endpoint_url.cache_clear()
    results: list[tuple[list[str], str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append((available_regions("bedrock-runtime"), endpoint_url("bedrock-runtime", "eu-west-3")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({(tuple(r), u) for r, u in results}) == 1
    assert results[0][1] == "https://bedrock-runtime.eu-west-3.amazonaws.com"


def test_import_does_not_load_botocore() -> None:
    """botocore costs ~100 ms to import: regions loads it on first use, not at import."""
    code = ("import sys, region_latency; before = 'botocore' in sys.modules; import region_latency.regions; "
            "print(before, 'botocore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # neither the package nor regions imports botocore at import time
