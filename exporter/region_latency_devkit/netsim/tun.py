"""TUN devices: open one inside a namespace, and the `ip` commands that give it addresses and routes.

A TUN device is created in the namespace of the thread that opens /dev/net/tun, and it disappears when the last
file descriptor on it closes: a crashed delay line leaves no device behind.
"""

from __future__ import annotations

import fcntl
import os
import struct

from region_latency_devkit.netsim import netns

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MTU = 1500


def open_tun(name: str, namespace: str) -> int:
    """Create TUN device NAME inside NAMESPACE; returns its non-blocking fd (raw IPv4 packets, no header).

    IPv6 is switched off on the device before anyone brings it up, so the kernel sends no router
    solicitations or MLD reports through the delay line.
    """
    with netns.entered(namespace):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
            netns.write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
        except BaseException:
            os.close(fd)
            raise
    return fd


def client_side_commands(dev: str, client_addr: str, region_addrs: list[str], mtu: int = MTU) -> list[str]:
    """The client namespace: its one address on the TUN, and a /32 route to every region through it."""
    cmds = [f"link set dev {dev} mtu {mtu}", f"addr add {client_addr}/32 dev {dev}", f"link set dev {dev} up"]
    cmds += [f"route add {addr}/32 dev {dev} src {client_addr}" for addr in region_addrs]
    return cmds


def regions_side_commands(dev: str, client_addr: str, mtu: int = MTU) -> list[str]:
    """The regions namespace: the TUN up with the same MTU, and the /32 route back to the client through it.

    The region addresses themselves sit on `lo` (added when the namespace is made), so servers can bind
    before the TUN exists.
    """
    return [f"link set dev {dev} mtu {mtu}", f"link set dev {dev} up", f"route add {client_addr}/32 dev {dev}"]
