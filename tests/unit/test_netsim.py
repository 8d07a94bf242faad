"""Region simulator pieces that need no root: the region syntax, and the delay line over socketpairs."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from region_latency.config import parse_duration as config_parse_duration
from region_latency_devkit.netsim import RegionSpec, parse_duration, parse_region
from region_latency_devkit.netsim.__main__ import regions_from_args
from region_latency_devkit.netsim.delayline import DelayLine
from region_latency_devkit.netsim.simulator import region_address

CLIENT = "198.18.0.1"


def test_durations() -> None:
    assert parse_duration("20ms") == pytest.approx(0.020)
    assert parse_duration("0.2s") == pytest.approx(0.2)
    assert parse_duration("150us") == pytest.approx(150e-6)
    with pytest.raises(ValueError):
        parse_duration("fast")


@pytest.mark.parametrize("text", ["0", "2", "0.035", ".5", " 0.2 "])
def test_bare_numbers_are_seconds_as_in_the_config(text: str) -> None:
    """One meaning for `--region us-east-1=0.02` and `--interval 5`: a number without a unit is seconds."""
    assert parse_duration(text) == pytest.approx(config_parse_duration(text))
    assert parse_region(f"us-east-1={text}")[1].rtt == pytest.approx(float(text))


def test_region_syntax() -> None:
    assert parse_region("us-east-1=20ms") == ("us-east-1", RegionSpec(rtt=0.020))
    name, spec = parse_region("eu-west-1=80ms,jitter=2ms,loss=0.01,server-delay=1ms")
    assert name == "eu-west-1"
    assert spec == RegionSpec(rtt=0.080, jitter=0.002, loss=0.01, server_delay=0.001)
    for bad in ("us-east-1", "=20ms", "a=20ms,color=red", "a=20ms,loss=2"):
        with pytest.raises(ValueError):
            parse_region(bad)
    with pytest.raises(ValueError, match="twice"):
        regions_from_args(["a=1ms", "a=2ms"])


def test_spec_validation_and_changes() -> None:
    with pytest.raises(ValueError):
        RegionSpec(rtt=-0.001)
    assert RegionSpec(rtt=0.01).with_changes(loss=1.0) == RegionSpec(rtt=0.01, loss=1.0)


def test_region_addresses_stay_in_the_benchmarking_range() -> None:
    assert region_address(0) == "198.19.0.1"
    assert region_address(253) == "198.19.0.254"
    assert region_address(254) == "198.19.1.1"


def ipv4(src: str, dst: str, payload: bytes = b"", proto: int = 17) -> bytes:
    """A minimal IPv4 header (the delay line reads version, protocol and addresses)."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def tcp(src: str, sport: int, dst: str, dport: int, flags: int) -> bytes:
    """An IPv4 packet with a bare TCP header: ports and flags are all the delay line's handshake log reads."""
    return ipv4(src, dst, struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 65535, 0, 0), proto=6)


@dataclass
class Line:
    line: DelayLine
    client: socket.socket  # the client namespace's kernel side: write = send, read = receive
    regions: socket.socket  # the regions namespace's kernel side

    def recv(self, sock: socket.socket, timeout: float = 1.0) -> tuple[bytes, float]:
        sock.settimeout(timeout)
        data = sock.recv(4096)
        return data, time.monotonic()


@pytest.fixture(params=[False, True], ids=["sleeping", "busy_read"])
def line(request: pytest.FixtureRequest) -> Iterator[Line]:
    client_outer, client_inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    regions_outer, regions_inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (client_inner, regions_inner):
        s.setblocking(False)
    dl = DelayLine(client_inner.fileno(), regions_inner.fileno(), seed=1, busy_read=request.param)
    dl.set_region("198.19.0.1", RegionSpec(rtt=0.040), "slow")
    dl.set_region("198.19.0.2", RegionSpec(rtt=0.0), "fast")
    thread = threading.Thread(target=dl.run, daemon=True)
    thread.start()
    try:
        yield Line(dl, client_outer, regions_outer)
    finally:
        dl.stop()
        thread.join(2)
        for s in (client_outer, client_inner, regions_outer, regions_inner):
            s.close()


def test_each_direction_gets_half_the_rtt(line: Line) -> None:
    sent = time.monotonic()
    line.client.send(ipv4(CLIENT, "198.19.0.1", b"syn"))
    data, arrived = line.recv(line.regions)
    assert data.endswith(b"syn")
    assert 0.019 <= arrived - sent <= 0.030
    line.regions.send(ipv4("198.19.0.1", CLIENT, b"synack"))
    data, back = line.recv(line.client)
    assert data.endswith(b"synack")
    assert 0.019 <= back - arrived <= 0.030


def test_fast_region_overtakes_slow_one_but_order_within_a_region_holds(line: Line) -> None:
    for i in range(5):
        line.client.send(ipv4(CLIENT, "198.19.0.1", b"slow%d" % i))
    line.client.send(ipv4(CLIENT, "198.19.0.2", b"fast"))
    received = [line.recv(line.regions)[0][20:] for _ in range(6)]
    assert received == [b"fast", b"slow0", b"slow1", b"slow2", b"slow3", b"slow4"]


def test_jitter_never_reorders_a_region(line: Line) -> None:
    line.line.set_region("198.19.0.1", RegionSpec(rtt=0.010, jitter=0.010), "slow")
    for i in range(30):
        line.client.send(ipv4(CLIENT, "198.19.0.1", b"%02d" % i))
    received = [line.recv(line.regions)[0][20:] for _ in range(30)]
    assert received == [b"%02d" % i for i in range(30)]


def test_loss_and_unknown_destinations_drop(line: Line) -> None:
    line.line.set_region("198.19.0.2", RegionSpec(rtt=0.0, loss=1.0), "fast")
    line.client.send(ipv4(CLIENT, "198.19.0.2", b"lost"))
    line.client.send(ipv4(CLIENT, "198.19.9.9", b"nowhere"))
    line.client.send(b"\x60" + bytes(39))  # IPv6
    with pytest.raises(TimeoutError):
        line.recv(line.regions, timeout=0.1)
    time.sleep(0.05)
    stats = line.line.stats()  # racy in principle, but the loop is idle by now
    assert stats["lost"] == 1 and stats["unrouted"] == 2 and stats["forwarded"] == 0
    assert stats["regions"]["fast"]["lost"] == 1


def test_the_line_logs_each_handshake_it_carries(line: Line) -> None:
    """SYN read -> SYN-ACK handed to the client, keyed by region address and client port: the round trip the line
    really gave a handshake, on the clock a client's perf_counter stamps use."""
    syn, synack, ack = 0x02, 0x12, 0x10
    started = time.perf_counter()
    line.client.send(tcp(CLIENT, 40001, "198.19.0.1", 443, syn))
    line.client.send(tcp(CLIENT, 40002, "198.19.0.1", 443, ack))  # not a handshake's start
    line.client.send(ipv4(CLIENT, "198.19.0.1", b"udp"))
    for _ in range(3):
        line.recv(line.regions)
    line.regions.send(tcp("198.19.0.1", 443, CLIENT, 40001, synack))
    line.regions.send(tcp("198.19.0.1", 443, CLIENT, 40001, synack))  # a retransmitted SYN-ACK: the first counts
    line.recv(line.client)
    line.recv(line.client)
    ended = time.perf_counter()
    logged = line.line.handshakes(reset=True)
    assert len(logged) == 1
    address, port, syn_read, handed = logged[0]
    assert (address, port) == ("198.19.0.1", 40001)
    assert started <= syn_read < handed <= ended
    assert 0.039 <= handed - syn_read < 0.040 + 0.5
    assert line.line.handshakes() == []
