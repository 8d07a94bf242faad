"""Worker processes of the simulator: `python -m region_latency_devkit.netsim.worker delayline|servers`.

Each worker dies with its parent (PR_SET_PDEATHSIG) and ignores Ctrl-C (the parent, which gets it too, tears
everything down in order). Its stdout is the control channel, so stray prints go to stderr instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from region_latency_devkit.netsim import netns, tun
from region_latency_devkit.netsim.control import LineChannel
from region_latency_devkit.netsim.delayline import DelayLine
from region_latency_devkit.netsim.proxy import ProxyPath, lateness_percentiles, start_proxy
from region_latency_devkit.netsim.servers import RegionState, server_ssl_context, start_region_servers
from region_latency_devkit.netsim.spec import RegionSpec

PR_SET_PDEATHSIG = 1
log = logging.getLogger("region_latency_devkit.netsim.worker")


def _become_worker() -> LineChannel:
    """Die with the parent, leave SIGINT to it, and move the protocol off fd 1 so prints cannot corrupt it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)
    return LineChannel(0, out)


def run_delayline(cfg: dict[str, Any], channel: LineChannel) -> None:
    """Open both TUNs in their namespaces, address and route them, then forward until told to stop."""
    client_fd = tun.open_tun(cfg["client_dev"], cfg["client_ns"])
    regions_fd = tun.open_tun(cfg["regions_dev"], cfg["regions_ns"])
    addresses = [r["address"] for r in cfg["regions"]]
    netns.ip_batch(tun.client_side_commands(cfg["client_dev"], cfg["client_address"], addresses, cfg["mtu"]),
                   netns=cfg["client_ns"])
    netns.ip_batch(tun.regions_side_commands(cfg["regions_dev"], cfg["client_address"], cfg["mtu"]),
                   netns=cfg["regions_ns"])
    line = DelayLine(client_fd, regions_fd, spin_ns=cfg["spin_ns"], mtu=cfg["mtu"],
                     busy_read=bool(cfg.get("busy_read")))
    for region in cfg["regions"]:
        line.set_region(region["address"], RegionSpec(**region["spec"]), region["name"])

    def on_control() -> None:
        messages = channel.read_available()
        if channel.closed:
            line.stop()
        for msg in messages:
            op = msg.get("op")
            if op == "set":
                line.set_region(msg["address"], RegionSpec(**msg["spec"]), msg["name"])
                channel.send({"ok": True})
            elif op == "stats":
                channel.send({"ok": True, "stats": line.stats(reset=bool(msg.get("reset")))})
            elif op == "handshakes":
                channel.send({"ok": True, "handshakes": line.handshakes(reset=bool(msg.get("reset")))})
            elif op == "stop":
                line.stop()
            else:
                channel.send({"error": f"unknown op {op!r}"})

    line.add_reader(channel.read_fd, on_control)
    if cfg.get("realtime"):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg["realtime"]))
    gc.collect()
    gc.disable()  # the loop allocates only acyclic tuples: no collector pauses in the middle of a release
    channel.send({"ready": True, "pid": os.getpid()})
    line.run()


async def serve(cfg: dict[str, Any], channel: LineChannel) -> None:
    """Servers for every region (inside the regions namespace already); in proxy mode, plus delaying proxies."""
    loop = asyncio.get_running_loop()
    ssl_ctx = server_ssl_context(Path(cfg["server_file"]))
    proxy_mode = cfg["mode"] == "proxy"
    states: dict[str, RegionState] = {}
    paths: dict[str, ProxyPath] = {}
    servers: list[asyncio.Server] = []
    ports: dict[str, dict[str, int]] = {}
    for region in cfg["regions"]:
        name, spec = region["name"], RegionSpec(**region["spec"])
        state = states[name] = RegionState(name, spec.server_delay)
        if proxy_mode:
            servers += await start_region_servers(state, "127.0.0.1", ssl_ctx, https_port=0, http_port=0)
            path = paths[name] = ProxyPath.from_spec(spec)
            ports[name] = {}
            for scheme, backend_port in state.ports.items():
                proxy = await start_proxy(path, "127.0.0.1", backend_port)
                servers.append(proxy)
                ports[name][scheme] = proxy.sockets[0].getsockname()[1]
        else:
            servers += await start_region_servers(state, region["address"], ssl_ctx)
            ports[name] = dict(state.ports)
    stopped = loop.create_future()

    def on_control() -> None:
        messages = channel.read_available()
        if channel.closed and not stopped.done():
            stopped.set_result(None)
        for msg in messages:
            op = msg.get("op")
            if op == "set":
                spec = RegionSpec(**msg["spec"])
                states[msg["name"]].server_delay = spec.server_delay
                if msg["name"] in paths:
                    paths[msg["name"]].set_spec(spec)
                channel.send({"ok": True})
            elif op == "stats":
                stats: dict[str, Any] = {
                    "regions": {n: {"connections": s.connections, "requests": s.requests, "chunks":
                                    paths[n].chunks if n in paths else None} for n, s in states.items()},
                }
                if proxy_mode:
                    stats.update(lateness_percentiles(list(paths.values())))
                    stats["forwarded"] = sum(p.chunks for p in paths.values())
                    if msg.get("reset"):
                        for p in paths.values():
                            p.chunks = 0
                            if p.lateness is not None:
                                p.lateness.clear()
                channel.send({"ok": True, "stats": stats})
            elif op == "stop":
                if not stopped.done():
                    stopped.set_result(None)
            else:
                channel.send({"error": f"unknown op {op!r}"})

    loop.add_reader(channel.read_fd, on_control)
    channel.send({"ready": True, "pid": os.getpid(), "ports": ports})
    await stopped
    for server in servers:
        server.close()


def run_servers(cfg: dict[str, Any], channel: LineChannel) -> None:
    if cfg["mode"] == "netns":
        with netns.entered(cfg["regions_ns"]):  # every socket the loop opens from here on lives in there
            asyncio.run(serve(cfg, channel))
    else:
        asyncio.run(serve(cfg, channel))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="netsim %(name)s: %(message)s")
    channel = _become_worker()
    try:
        cfg = channel.receive()
        if argv[:1] == ["delayline"]:
            run_delayline(cfg, channel)
        elif argv[:1] == ["servers"]:
            run_servers(cfg, channel)
        else:
            raise ValueError(f"unknown worker kind {argv!r}")
    except Exception as e:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            channel.send({"error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
