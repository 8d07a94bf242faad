"""The https probe against local HTTP(S) servers with a test CA: phases, delays, every failure kind."""

from __future__ import annotations

import time

import pytest

from region_latency.probes import ErrorKind, ProbeResult, Target, get_probe
from tests.support.servers import Reply, ServerGroup, free_port

probe = get_probe("https")
SLACK = 0.5  # scheduling slack allowed beyond a timeout on a shared, loaded machine


def target(url: str, **options: object) -> Target:
    return Target(service="test", region="local-1", url=url, options=options)


def timed(t: Target, timeout: float) -> tuple[ProbeResult, float]:
    started = time.perf_counter()
    result = probe(t, timeout)
    return result, time.perf_counter() - started


def test_server_delay_shows_in_ttfb_which_is_the_latency(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(delay=0.05))
    result = probe(target(server.url, ca_file=local_servers.ca.ca_file), 5.0)
    assert result.ok, result
    assert result.status == 200
    assert result.latency == result.phases["ttfb"]
    assert 0.045 <= result.phases["ttfb"] < 0.05 + SLACK
    assert result.phases["connect"] < 0.05 + SLACK
    assert result.phases["tls"] > 0
    assert result.phases["total"] >= result.phases["connect"] + result.phases["tls"] + result.phases["ttfb"]


def test_dns_is_outside_connect_and_sni_carries_the_name(local_servers: ServerGroup) -> None:
    server = local_servers.https(names=("localhost",))  # the certificate names localhost only, not the IP
    result = probe(target(server.url_for("localhost"), ca_file=local_servers.ca.ca_file, ip_version=4), 5.0)
    assert result.ok, result
    assert {"dns", "connect", "tls", "ttfb", "total"} <= set(result.phases)
    assert server.requests[-1].headers["host"] == f"localhost:{server.port}"


def test_every_probe_uses_a_fresh_connection(local_servers: ServerGroup) -> None:
    server = local_servers.https()
    options = {"ca_file": local_servers.ca.ca_file}
    results = [probe(target(server.url, **options), 5.0) for _ in range(2)]
    assert all(r.ok and "connect" in r.phases and "tls" in r.phases for r in results), results


@pytest.mark.parametrize("status", [403, 404, 503])
def test_error_status_is_reachable_and_recorded(local_servers: ServerGroup, status: int) -> None:
    server = local_servers.https(Reply(status=status, body=b'{"message":"denied"}'))
    result = probe(target(server.url, ca_file=local_servers.ca.ca_file), 5.0)
    assert result.ok, result
    assert result.status == status
    assert result.latency is not None and result.latency > 0


def test_path_method_and_headers_options(local_servers: ServerGroup) -> None:
    server = local_servers.http()
    result = probe(target(server.url, path="/ping?x=1", method="head", headers={"X-Probe": "1"}), 5.0)
    assert result.ok, result
    assert "tls" not in result.phases  # plain http: no handshake
    seen = server.requests[-1]
    assert (seen.method, seen.path, seen.headers["x-probe"]) == ("HEAD", "/ping?x=1", "1")
    assert seen.headers["user-agent"].startswith("region-latency-exporter/")


def test_server_that_never_answers_after_tls_times_out_on_time(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(hang=True))
    result, elapsed = timed(target(server.url, ca_file=local_servers.ca.ca_file), 0.3)
    assert result.error is ErrorKind.TIMEOUT
    assert "waiting for the response" in result.detail
    assert "tls" in result.phases  # the phases that completed are kept
    assert elapsed < 0.3 + SLACK


def test_server_that_accepts_tcp_but_never_handshakes_times_out(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp()
    result, elapsed = timed(target(listener.https_url()), 0.3)
    assert result.error is ErrorKind.TIMEOUT
    assert "TLS handshake" in result.detail
    assert elapsed < 0.3 + SLACK


def test_slow_server_is_cut_by_the_overall_deadline(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(delay=2.0))
    result, elapsed = timed(target(server.url, ca_file=local_servers.ca.ca_file), 0.4)
    assert result.error is ErrorKind.TIMEOUT
    assert elapsed < 0.4 + SLACK


def test_untrusted_certificate_is_a_tls_error(local_servers: ServerGroup) -> None:
    server = local_servers.https(ca=local_servers.new_ca())  # signed by a CA the client does not trust
    result = probe(target(server.url, ca_file=local_servers.ca.ca_file), 5.0)
    assert result.error is ErrorKind.TLS
    assert "certificate verify failed" in result.detail
    assert "connect" in result.phases


def test_certificate_for_another_name_is_a_tls_error(local_servers: ServerGroup) -> None:
    server = local_servers.https(names=("other.test",))
    result = probe(target(server.url_for("localhost"), ca_file=local_servers.ca.ca_file), 5.0)
    assert result.error is ErrorKind.TLS


def test_insecure_and_ssl_context_options(local_servers: ServerGroup) -> None:
    server = local_servers.https(ca=local_servers.new_ca())
    assert probe(target(server.url, insecure=True), 5.0).ok
    trusted = local_servers.https()
    assert probe(target(trusted.url, verify=local_servers.ca.client_context()), 5.0).ok
    assert probe(target(trusted.url, verify=local_servers.ca.ca_file), 5.0).ok


def test_default_trust_store_rejects_the_test_ca(local_servers: ServerGroup) -> None:
    server = local_servers.https()
    assert probe(target(server.url), 5.0).error is ErrorKind.TLS


def test_refused() -> None:
    result = probe(target(f"https://127.0.0.1:{free_port()}"), 2.0)
    assert result.error is ErrorKind.REFUSED


def test_unresolvable_name() -> None:
    result = probe(target("https://something.invalid/"), 2.0)
    assert result.error is ErrorKind.DNS
    assert result.latency is None


def test_not_http_is_an_http_error(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close_after_greeting=True)
    result = probe(target(f"http://127.0.0.1:{listener.port}"), 2.0)
    assert result.error is ErrorKind.HTTP, result


def test_connection_closed_without_answer(local_servers: ServerGroup) -> None:
    listener = local_servers.tcp(close_after_greeting=True)
    result = probe(target(f"http://127.0.0.1:{listener.port}"), 2.0)
    assert result.error is ErrorKind.CONNECTION, result


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://127.0.0.1:21", {}, "https://"),
        ("https://127.0.0.1", {"path": "no-slash"}, "path"),
        ("https://127.0.0.1", {"method": "GET /"}, "method"),
        ("https://127.0.0.1", {"insecure": True, "ca_file": "/x.pem"}, "only one"),
        ("https://127.0.0.1", {"insecure": "yes"}, "insecure"),
        ("https://127.0.0.1", {"ca_file": "/nonexistent/ca.pem"}, "CA bundle"),
        ("https://127.0.0.1", {"headers": {"X": 1}}, "headers"),
    ],
)
def test_bad_options_raise_clear_errors(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        probe(target(url, **options), 1.0)
