"""`python -m region_latency_devkit.netsim --region us-east-1=20ms --region eu-west-1=80ms`: run simulated regions.

Prints the endpoint URLs, the CA bundle and how to run a command inside the client namespace (or, with
`--json`, all of that as one JSON document for a demo config), then runs until Ctrl-C / SIGTERM and tears
everything down. The functions here are importable so the main CLI can wrap them.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from region_latency_devkit.netsim import netns
from region_latency_devkit.netsim.simulator import RegionSimulator
from region_latency_devkit.netsim.spec import RegionSpec, parse_region


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m region_latency_devkit.netsim", description=__doc__.split("\n\n")[0])
    p.add_argument("--region", action="append", default=[], metavar="NAME=RTT[,jitter=J][,loss=P][,server_delay=D]",
                   help="a simulated region, e.g. us-east-1=20ms or eu-west-1=80ms,jitter=2ms,loss=0.01 "
                        "(repeat for more; a bare number is seconds)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--proxy", action="store_true", help="force the fallback TCP proxy (no handshake delay)")
    mode.add_argument("--netns", action="store_true", help="fail instead of falling back to the proxy")
    p.add_argument("--json", action="store_true", help="print the endpoints as JSON on stdout (messages to stderr)")
    p.add_argument("--json-file", type=Path, help="also write the endpoints JSON to this file")
    p.add_argument("--duration", type=float, help="stop after this many seconds instead of waiting for Ctrl-C")
    p.add_argument("--spin-us", type=int, default=300, help="busy-poll this long before each release (µs)")
    p.add_argument("--cleanup", action="store_true", help="only delete namespaces left by dead simulators")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def regions_from_args(values: Sequence[str]) -> dict[str, RegionSpec]:
    """`["us-east-1=20ms", ...]` -> {name: spec}; a name given twice is an error."""
    regions: dict[str, RegionSpec] = {}
    for value in values:
        name, spec = parse_region(value)
        if name in regions:
            raise ValueError(f"region {name!r} given twice")
        regions[name] = spec
    return regions


def summary(sim: RegionSimulator) -> str:
    """What a person needs to use the running simulator."""
    info = sim.describe()
    width = max(len(name) for name in info["regions"])
    lines = [f"region simulator running (mode {info['mode']})"]
    for name, r in info["regions"].items():
        extra = "".join(f" {k} {r[k] * 1e3:g}ms" for k in ("jitter", "server_delay") if r[k])
        extra += f" loss {r['loss']:g}" if r["loss"] else ""
        lines.append(f"  {name:<{width}}  rtt {r['rtt'] * 1e3:g}ms{extra}  {r['endpoint_url']}  {r['http_url']}")
    lines.append(f"CA bundle: {info['ca_file']}")
    first = next(iter(info["regions"].values()))
    curl = ["curl", "--cacert", info["ca_file"], first["endpoint_url"]]
    if sim.mode == "netns":
        lines.append(f"client namespace: {info['client_netns']} (the regions are reachable only from inside it)")
        lines.append(f"run a command inside it: {' '.join(sim.client_command(curl))}")
    else:
        lines.append("proxy mode: TCP handshakes are NOT delayed; clients run anywhere on this host, e.g.")
        lines.append(f"  {' '.join(curl)}")
    lines.append("Ctrl-C to stop.")
    return "\n".join(lines)


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so the simulator's context manager tears everything down."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


def run(regions: dict[str, RegionSpec], *, mode: str = "auto", duration: float | None = None,
        spin_us: int = 300, as_json: bool = False, json_file: Path | None = None,
        out: TextIO = sys.stdout) -> int:
    """Start the simulator, print how to use it, wait for the end (Ctrl-C, SIGTERM or DURATION), tear down."""
    with RegionSimulator(regions, mode=mode, spin_us=spin_us) as sim:  # type: ignore[arg-type]
        info: dict[str, Any] = sim.describe()
        if json_file is not None:
            json_file.write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2) if as_json else summary(sim), file=out, flush=True)
        threading.Event().wait(duration)  # interruptible by signals in the main thread
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.cleanup:
        removed = netns.cleanup_leftovers()
        print(f"removed {len(removed)} leftover namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
        return 0
    try:
        regions = regions_from_args(args.region)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not regions:
        print("error: give at least one --region NAME=RTT", file=sys.stderr)
        return 2
    install_signal_handlers()
    mode = "proxy" if args.proxy else "netns" if args.netns else "auto"
    try:
        return run(regions, mode=mode, duration=args.duration, spin_us=args.spin_us, as_json=args.json,
                   json_file=args.json_file)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
