"""The api probe: a real signed boto3 call with dummy credentials against a local fake AWS endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from region_latency.probes import ErrorKind, ProbeResult, Target, get_probe
from region_latency.probes.api import DEFAULT_OPERATIONS, clear_clients
from tests.support.aws_env import DUMMY_ACCESS_KEY
from tests.support.servers import Reply, ServerGroup, aws_error, fake_aws, free_port

probe = get_probe("api")
SLACK = 0.5


@pytest.fixture(autouse=True)
def fresh_clients() -> Iterator[None]:
    """Cached clients hold the credentials of the test that made them: start and end clean."""
    clear_clients()
    yield
    clear_clients()


def target(url: str, service: str = "bedrock", **options: object) -> Target:
    return Target(service=service, region="us-east-1", url=url, options=options)


def timed(t: Target, timeout: float) -> tuple[ProbeResult, float]:
    started = time.perf_counter()
    result = probe(t, timeout)
    return result, time.perf_counter() - started


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_signed_call_and_its_round_trip(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws(delay=0.05))
    results = [probe(target(server.url), 5.0) for _ in range(3)]
    for result in results:
        assert result.ok, result
        assert result.status == 200
        assert 0.045 <= result.latency < 0.05 + SLACK
        assert result.phases["total"] == result.latency
    assert len(server.requests) == 3
    request = server.requests[0]
    assert (request.method, request.path) == ("GET", "/foundation-models")
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={DUMMY_ACCESS_KEY}/")


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_client_creation_is_not_timed(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    result, elapsed = timed(target(server.url), 5.0)  # the first probe creates (and caches) the client
    assert result.ok, result
    assert result.latency < elapsed


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_bedrock_runtime_default_operation(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    result = probe(target(server.url, service="bedrock-runtime"), 5.0)
    assert result.ok, result
    assert DEFAULT_OPERATIONS["bedrock-runtime"] == "ListAsyncInvokes"
    assert server.requests[-1].path.startswith("/async-invoke")


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_operation_and_params_options(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    result = probe(target(server.url, operation="list_foundation_models", params={"byProvider": "anthropic"}), 5.0)
    assert result.ok, result
    assert server.requests[-1].path == "/foundation-models?byProvider=anthropic"


@pytest.mark.usefixtures("dummy_aws_credentials")
@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "AccessDeniedException"), (400, "UnrecognizedClientException"), (500, "InternalServerException")],
)
def test_service_errors_are_round_trips_and_are_not_retried(
    local_servers: ServerGroup, status: int, code: str
) -> None:
    server = local_servers.http(aws_error(status, code))
    result = probe(target(server.url), 5.0)
    assert result.ok, result
    assert result.status == status
    assert result.detail == code
    assert len(server.requests) == 1  # retries are off, even for a retryable 500


@pytest.mark.usefixtures("no_aws_credentials")
def test_no_credentials_is_a_clear_failure(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    result = probe(target(server.url), 5.0)
    assert result.error is ErrorKind.CREDENTIALS
    assert "credentials" in result.detail.lower()
    assert server.requests == []


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_server_that_never_answers_times_out_on_time(local_servers: ServerGroup) -> None:
    server = local_servers.http(fake_aws())
    assert probe(target(server.url), 5.0).ok  # client made and cached outside the timed case
    server.set_reply(Reply(hang=True))
    result, elapsed = timed(target(server.url), 0.4)
    assert result.error is ErrorKind.TIMEOUT
    assert elapsed < 0.4 + SLACK


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_refused_and_unresolvable() -> None:
    assert probe(target(f"http://127.0.0.1:{free_port()}"), 5.0).error is ErrorKind.REFUSED
    assert probe(target("https://bedrock.something.invalid"), 5.0).error is ErrorKind.DNS


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_tls_untrusted_then_trusted(local_servers: ServerGroup) -> None:
    server = local_servers.https(fake_aws())
    assert probe(target(server.url), 5.0).error is ErrorKind.TLS
    result = probe(target(server.url, ca_file=local_servers.ca.ca_file), 5.0)
    assert result.ok, result


@pytest.mark.usefixtures("dummy_aws_credentials")
def test_unparsable_answer_still_counts_as_a_round_trip(local_servers: ServerGroup) -> None:
    server = local_servers.http(Reply(status=200, body=b"<html>captive portal</html>"))
    result = probe(target(server.url), 5.0)
    assert result.ok, result  # botocore tolerates a non-JSON body; the round trip happened either way
    assert result.status == 200


@pytest.mark.usefixtures("dummy_aws_credentials")
@pytest.mark.parametrize(
    ("service", "options", "message"),
    [
        ("s3", {}, "needs options\\['operation'\\]"),
        ("bedrock", {"operation": "NoSuchOperation"}, "no operation"),
        ("bedrock", {"params": {"byProvider": 5}}, "params"),
        ("bedrock", {"params": "x"}, "params"),
        ("bedrock", {"insecure": True, "ca_file": "/x"}, "only one"),
        ("no-such-service", {"operation": "X"}, "no service"),
    ],
)
def test_bad_input_raises_clear_errors(
    local_servers: ServerGroup, service: str, options: dict[str, object], message: str
) -> None:
    server = local_servers.http(fake_aws())
    with pytest.raises(ValueError, match=message):
        probe(target(server.url, service=service, **options), 5.0)


def test_non_http_url_raises() -> None:
    with pytest.raises(ValueError, match="endpoint URL"):
        probe(target("tcp://127.0.0.1:1"), 1.0)
