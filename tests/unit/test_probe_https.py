"""The https probe against local HTTP(S) servers with a test CA: phases, delays, every failure kind."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from region_latency.probes import ErrorKind, ProbeResult, Target, get_probe
from region_latency.probes import https as https_probe
from region_latency.probes.base import Deadline
from tests.support.servers import HttpServer, RecordedRequest, Reply, ServerGroup, free_port

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


def test_a_targets_header_replaces_the_default_of_the_same_name_in_any_case(local_servers: ServerGroup) -> None:
    server = local_servers.http()
    options = https_probe.HttpsOptions.parse({"headers": {"user-agent": "mine/1", "ACCEPT": "text/plain"}})
    for _ in range(2):  # the second probe sends the request built for the first
        assert probe(Target(service="test", region="local-1", url=server.url, options=options), 5.0).ok
    for seen in server.requests[-2:]:
        assert (seen.headers["user-agent"], seen.headers["accept"]) == ("mine/1", "text/plain")
        assert seen.header_names.count("user-agent") == seen.header_names.count("accept") == 1


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


# -- the probe's own network backend: what `connect` and `tls` stamp, and the deadline on both ---------------------


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: further SYNs are dropped, so a connect there never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    try:
        yield port
    finally:
        filler.close()
        server.close()


def test_connect_that_never_completes_times_out_on_time(full_backlog: int) -> None:
    result, elapsed = timed(target(f"https://127.0.0.1:{full_backlog}"), 0.3)
    assert result.error is ErrorKind.TIMEOUT, result
    assert "TCP connect" in result.detail
    assert "connect" not in result.phases
    assert elapsed < 0.3 + SLACK


def test_backend_sets_nodelay_and_options_before_connecting(
    local_servers: ServerGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = local_servers.tcp()
    seen: dict[str, int] = {}

    class Recording(socket.socket):
        def connect_ex(self, address: Any) -> int:
            seen["nodelay"] = self.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen["keepalive"] = self.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            return super().connect_ex(address)

    monkeypatch.setattr(https_probe.socket, "socket", Recording)
    backend = https_probe.DeadlineBackend(Deadline(2.0))
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    stream = backend.connect_tcp("127.0.0.1", listener.port, 2.0, local_address="127.0.0.1", socket_options=options)
    try:
        assert seen["nodelay"] and seen["keepalive"]
        assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
        assert stream.get_extra_info("server_addr")[1] == listener.port
        assert backend.stamps.phases()["connect"] > 0
    finally:
        stream.close()


def test_backend_never_resolves_names_inside_connect() -> None:
    backend = https_probe.DeadlineBackend(Deadline(2.0))
    with pytest.raises(https_probe.StreamError, match="not an IP address"):
        backend.connect_tcp("localhost", 443, 2.0)
    assert backend.stamps.connect is None


def test_backend_connects_over_ipv6() -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        backend = https_probe.DeadlineBackend(Deadline(2.0))
        stream = backend.connect_tcp("::1", server.getsockname()[1], 2.0)
        try:
            assert stream.get_extra_info("socket").family == socket.AF_INET6
            assert "connect" in backend.stamps.phases()
        finally:
            stream.close()


def test_ipv6_literal_url_is_refused_by_kind() -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    result = probe(target(f"https://[::1]:{free_port()}", ip_version=6), 2.0)
    assert result.error is ErrorKind.REFUSED, result


def test_handshake_trickled_by_the_server_is_cut_at_the_deadline() -> None:
    """A server that keeps a TLS record coming one byte at a time: every wait is short, the sum is not."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16 KiB ...
            while not stop.wait(0.05):  # ... of which one byte arrives every 50 ms
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        result, elapsed = timed(target(f"https://127.0.0.1:{server.getsockname()[1]}"), 0.4)
    finally:
        stop.set()
        server.close()
    assert result.error is ErrorKind.TIMEOUT, result
    assert "TLS handshake" in result.detail
    assert "connect" in result.phases and "tls" not in result.phases
    assert elapsed < 0.4 + SLACK


def test_tls_stamp_is_the_handshake_and_the_stream_reports_tls(local_servers: ServerGroup) -> None:
    server = local_servers.https()
    backend = https_probe.DeadlineBackend(Deadline(5.0))
    stream = backend.connect_tcp("127.0.0.1", server.port, 5.0)
    context = https_probe.HttpsOptions.parse({"ca_file": local_servers.ca.ca_file}).ssl_context
    assert context is not None
    tls = stream.start_tls(context, "127.0.0.1", 5.0)
    try:
        assert tls.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        assert isinstance(tls.get_extra_info("is_readable"), bool)  # TLS 1.3 tickets may already be there
        start, end = backend.stamps.tls or (0.0, 0.0)
        assert 0 < end - start < 5.0
    finally:
        tls.close()


def test_tls_span_leaves_out_the_clients_own_handshake_cpu() -> None:
    """ClientHello sent -> server flight arrived: the CPU before and after (key share, verification) is not in it."""
    here, peer = socket.socketpair()

    class Handshake:  # an SSLSocket's part that _handshake uses; 50 ms of "CPU" in each do_handshake() call
        calls = 0

        def setblocking(self, flag: bool) -> None:
            pass

        def fileno(self) -> int:
            return here.fileno()

        def do_handshake(self) -> None:
            self.calls += 1
            time.sleep(0.05)
            if self.calls == 1:
                peer.send(b"server flight")  # arrives while the client is still busy
                raise ssl.SSLWantReadError()

    try:
        began = time.perf_counter()
        start, end = https_probe._handshake(Handshake(), time.perf_counter() + 5)  # type: ignore[arg-type]
        assert time.perf_counter() - began >= 0.1
        assert began + 0.05 <= start <= end < start + 0.03
    finally:
        here.close()
        peer.close()


def test_ttfb_ends_when_the_response_arrived_not_when_recv_returned() -> None:
    """Stamps: request handed to the kernel -> the wake-up at which the response arrived; the client's CPU in
    between (TLS tickets, decryption: here 50 ms slept in each recv()) is left out."""
    here, peer = socket.socketpair()

    class Sock:  # what DeadlineStream uses of a (TLS) socket
        calls = 0

        def setblocking(self, flag: bool) -> None:
            pass

        def settimeout(self, value: float | None) -> None:
            pass

        def fileno(self) -> int:
            return here.fileno()

        def send(self, data: memoryview) -> int:
            peer.send(b"x")  # the peer answers at once: readable from now on
            return len(data)

        def recv(self, size: int) -> bytes:
            self.calls += 1
            time.sleep(0.05)
            if self.calls == 1:
                raise ssl.SSLWantReadError()  # a session ticket, processed: no application data yet
            return b"HTTP/1.1 200 OK\r\n"

    stamps = https_probe.SocketStamps()
    stream = https_probe.DeadlineStream(Sock(), Deadline(5.0), stamps)  # type: ignore[arg-type]
    try:
        before = time.perf_counter()
        stream.write(b"GET / HTTP/1.1\r\n\r\n")
        assert stream.read(65536) == b"HTTP/1.1 200 OK\r\n"
        returned = time.perf_counter()
        assert stamps.first_write is not None and stamps.first_read is not None
        assert before <= stamps.first_write <= stamps.first_read <= returned - 0.045
        assert stream.read(65536) == b"HTTP/1.1 200 OK\r\n"  # later reads: plain recv, stamps unchanged
        assert stamps.phases()["ttfb"] < 0.1
    finally:
        here.close()
        peer.close()


class _SlowSetupSocket(ssl.SSLSocket):
    """An SSLSocket whose set-up (before any handshake byte is sent) burns 150 ms of the client's own time."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        time.sleep(0.15)
        return super()._create(*args, **kwargs)  # type: ignore[misc]


def test_the_probes_tls_phase_is_the_socket_span_after_connect_not_the_clients_cpu(
        local_servers: ServerGroup) -> None:
    """The probe reports the socket stamps' `tls` (ClientHello sent -> server flight arrived), not a span around
    the whole TLS start, which also holds the client's own TLS set-up (here 150 ms of it); the span starts after the
    TCP handshake ended."""
    server = local_servers.https()
    context = ssl.create_default_context(cafile=local_servers.ca.ca_file)
    context.sslsocket_class = _SlowSetupSocket
    stamps = https_probe.SocketStamps()
    original = https_probe.DeadlineBackend.__init__

    def keep_stamps(self: https_probe.DeadlineBackend, deadline: Deadline, _: object = None) -> None:
        original(self, deadline, stamps)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(https_probe.DeadlineBackend, "__init__", keep_stamps)
        started = time.perf_counter()
        result = probe(target(server.url, verify=context), 5.0)
        elapsed = time.perf_counter() - started
    assert result.ok, result
    assert elapsed >= 0.15  # the slow set-up really happened ...
    assert result.phases["tls"] < 0.15  # ... and is not in the phase
    assert stamps.connect is not None and stamps.tls is not None
    assert stamps.connect[1] <= stamps.tls[0] < stamps.tls[1]
    assert result.phases["tls"] == stamps.tls[1] - stamps.tls[0]
    if stamps.connect_kernel is None:
        assert result.connect_timing == "stamps"
        assert result.phases["connect"] == stamps.connect[1] - stamps.connect[0]
    else:  # Linux: the kernel's own handshake round trip
        assert result.connect_timing == "kernel"
        assert result.phases["connect"] == stamps.connect_kernel


# -- measure: warm and cold ------------------------------------------------------------------------------------


@pytest.fixture
def kept_closed() -> Iterator[None]:
    yield
    https_probe.close_kept_connections()


@pytest.mark.usefixtures("kept_closed")
def test_warm_probes_reuse_one_connection_and_measure_only_requests_on_it(local_servers: ServerGroup) -> None:
    """The first warm probe connects, sends one request, then the measured one; later probes send one request
    each on the same connection and have no connect or tls phase."""
    server = local_servers.https(Reply(status=403))
    warm = target(server.url, ca_file=local_servers.ca.ca_file, measure="warm")
    results = [probe(warm, 5.0) for _ in range(3)]
    assert all(r.ok for r in results), results
    assert server.accepted == 1
    assert len(server.requests) == 4
    first, *later = results
    assert {"connect", "tls", "ttfb", "total"} <= set(first.phases)
    assert first.connect_timing is not None and first.tls_version is not None
    for result in later:
        assert set(result.phases) == {"ttfb", "total"}
        assert result.connect_timing is None
    assert all(r.latency == r.phases["ttfb"] and r.status == 403 for r in results)


@pytest.mark.usefixtures("kept_closed")
def test_warm_reconnects_when_the_server_closed_the_idle_connection(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(status=200))
    warm = target(server.url, ca_file=local_servers.ca.ca_file, measure="warm")
    assert probe(warm, 5.0).ok
    server.drop_connections()
    time.sleep(0.05)  # the FIN is in: the idle connection reads as closed
    result = probe(warm, 5.0)
    assert result.ok, result
    assert server.accepted == 2
    assert "connect" in result.phases  # this probe had to connect again; its latency is still a warm request
    assert probe(warm, 5.0).ok and server.accepted == 2


@pytest.mark.usefixtures("kept_closed")
def test_warm_survives_the_server_closing_the_connection_under_the_request(local_servers: ServerGroup) -> None:
    """The server hangs up as the request arrives on the kept connection (no answer): the probe connects again
    and measures a request there, within its deadline, instead of reporting a failure."""
    server: HttpServer

    def respond(request: RecordedRequest) -> Reply:
        if len(server.requests) == 3:  # the second probe's request on the kept connection
            server.drop_connections()
        return Reply(status=200)

    server = local_servers.http(respond)
    warm = target(server.url, measure="warm")
    assert probe(warm, 5.0).ok  # requests 1 (opens the connection) and 2 (measured)
    result = probe(warm, 5.0)  # request 3 is dropped; 4 opens a new connection, 5 is measured
    assert result.ok, result
    assert (server.accepted, len(server.requests)) == (2, 5)
    assert "connect" in result.phases


@pytest.mark.usefixtures("kept_closed")
def test_warm_probes_of_two_endpoints_keep_two_connections(local_servers: ServerGroup) -> None:
    one, two = local_servers.http(Reply(status=200)), local_servers.http(Reply(status=200))
    for _ in range(2):
        assert probe(target(one.url, measure="warm"), 5.0).ok
        assert probe(target(two.url, measure="warm"), 5.0).ok
    assert (one.accepted, two.accepted) == (1, 1)


def test_cold_latency_is_a_new_connections_whole_network_cost(local_servers: ServerGroup) -> None:
    server = local_servers.https(Reply(status=403))
    result = probe(target(server.url.replace("127.0.0.1", "localhost"), ca_file=local_servers.ca.ca_file,
                          measure="cold", ip_version=4), 5.0)
    assert result.ok, result
    parts = [result.phases[name] for name in ("dns", "connect", "tls", "ttfb")]
    assert result.latency == pytest.approx(sum(parts))
    assert result.latency is not None and result.latency > result.phases["ttfb"]
    assert server.accepted == 1


def test_measure_must_be_ttfb_warm_or_cold() -> None:
    with pytest.raises(ValueError, match="'measure' must be ttfb, warm or cold"):
        https_probe.HttpsOptions.parse({"measure": "hot"})
    assert https_probe.HttpsOptions.parse({}).measure == "ttfb"


def test_a_server_that_switches_protocols_ends_the_probe_at_its_answer() -> None:
    """`method: CONNECT` answered 200 switches the connection away from HTTP: h11 pauses there, and the probe
    takes the answer instead of asking h11 for events forever."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            time.sleep(1.0)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        result, elapsed = timed(target(f"http://127.0.0.1:{server.getsockname()[1]}", method="CONNECT"), 3.0)
    finally:
        server.close()
    assert result.ok and result.status == 200, result
    assert elapsed < 1.0


@pytest.mark.usefixtures("kept_closed")
def test_warm_connects_once_when_the_endpoint_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a kept connection that breaks under the request is replaced; a connect that fails is the answer (it
    was tried twice)."""
    calls: list[str] = []
    real = https_probe.DeadlineBackend.connect_tcp

    def counting(self: https_probe.DeadlineBackend, host: str, port: int, *args: Any, **kwargs: Any
                 ) -> https_probe.DeadlineStream:
        calls.append(host)
        return real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(https_probe.DeadlineBackend, "connect_tcp", counting)
    result = probe(target(f"http://127.0.0.1:{free_port()}", measure="warm"), 2.0)
    assert result.error is ErrorKind.REFUSED, result
    assert calls == ["127.0.0.1"]
