"""Benchmark 1, accuracy: our tcp and https probes against blackbox_exporter 0.23 on the same simulated paths.

Five regions (true RTT 10, 30, 80, 150, 300 ms), 50 probes of each kind per region. For every region and kind one
worker process in the client namespace alternates our probe and the same probe asked of blackbox_exporter (who
goes first swaps every round), so both see the same path at the same moments. Error = measured - truth, where the
truth is one RTT for a TCP connect, a TLS 1.3 handshake, and a request's time to first byte (server delay 0):
the simulator puts the delay on the packets, and a handshake or a request/response is one round trip.

Compared pairs: our tcp `connect` vs blackbox tcp_connect `probe_duration_seconds` (blackbox has no finer
phase for TCP); our https `connect`/`tls`/`ttfb` vs blackbox http `probe_http_duration_seconds` phases
`connect`/`tls`/`processing` (gotConn -> first response byte).

    .venv/bin/python -m bench.accuracy [-n 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import blackbox
from bench.common import (
    OUT_DIR,
    BenchResult,
    Goal,
    collect_worker,
    command_line,
    md_table,
    median,
    ms,
    percentile,
    start_simulator,
    start_worker,
)
from bench.report import SECTIONS, section_header
from region_latency.netsim import RegionSpec

RTTS = (0.010, 0.030, 0.080, 0.150, 0.300)
PROBES = 50
WARMUP = 2
TCP_GOAL = 0.0003  # our TCP connect's median error must stay within 0.3 ms
# (label, our phase, blackbox value) per kind
COMPARED: dict[str, list[tuple[str, str, str]]] = {
    "tcp": [("connect", "connect", "probe_duration_seconds")],
    "https": [("connect", "connect", "phase.connect"), ("tls", "tls", "phase.tls"),
              ("ttfb", "ttfb", "phase.processing")],
}
INFO_ONLY = {"https": [("total (3 RTT)", "total", "probe_duration_seconds")]}


# -- the worker (runs in the client namespace) ------------------------------------------------------------------------

def worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Alternate our probe and blackbox's on one region; raw phase values of each round."""
    from region_latency.probes import Target, get_probe

    kind = payload["kind"]
    ours = get_probe(kind)
    options = {"ca_file": payload["ca_file"]} if kind == "https" else {}
    target = Target("bedrock-runtime", payload["region"], payload["url"], options)
    bb_target = blackbox.tcp_target(payload["address"]) if kind == "tcp" else payload["url"]
    module = blackbox.TCP_MODULE if kind == "tcp" else blackbox.HTTPS_MODULE
    rounds: dict[str, list[dict[str, float]]] = {"ours": [], "blackbox": []}
    failures = {"ours": 0, "blackbox": 0}

    def run_ours() -> dict[str, float] | None:
        result = ours(target, 5.0)
        return dict(result.phases) if result.ok else None

    def run_blackbox() -> dict[str, float] | None:
        values, _ = blackbox.probe(payload["bb_port"], bb_target, module)
        return values if values.get("probe_success") == 1.0 else None

    runners = {"ours": run_ours, "blackbox": run_blackbox}
    for i in range(payload["n"] + WARMUP):
        order = ("ours", "blackbox") if i % 2 == 0 else ("blackbox", "ours")
        for who in order:
            values = runners[who]()
            if i < WARMUP:
                continue
            if values is None:
                failures[who] += 1
            else:
                rounds[who].append(values)
        time.sleep(0.005)
    return {"rounds": rounds, "failures": failures}


# -- the benchmark ----------------------------------------------------------------------------------------------------

def region_name(rtt: float) -> str:
    return f"rtt-{round(rtt * 1e3):03d}ms"


def run(n: int = PROBES, rtts: Sequence[float] = RTTS) -> BenchResult:
    started = time.monotonic()
    workdir = OUT_DIR / "accuracy"
    sim = start_simulator({region_name(rtt): RegionSpec(rtt=rtt) for rtt in rtts})
    box = None
    try:
        box = blackbox.Blackbox(sim, workdir)
        sim.call_in_client(box.wait_ready)
        sim.stats(reset=True)
        workers = []
        for rtt in rtts:
            region = region_name(rtt)
            for kind in ("tcp", "https"):
                payload = {"kind": kind, "region": region, "address": sim.address(region),
                           "url": sim.endpoint_url(region), "ca_file": str(sim.ca_file), "n": n,
                           "bb_port": box.port}
                log = workdir / f"worker-{region}-{kind}.log"
                workers.append((rtt, kind, log, start_worker(sim, "bench.accuracy", payload, log)))
        raw: dict[str, Any] = {}
        for rtt, kind, log, proc in workers:
            raw.setdefault(kind, {})[f"{rtt:g}"] = collect_worker(proc, log, timeout=400)
        line_stats = sim.stats()
        bb_version = blackbox.version()
    finally:
        if box is not None:
            box.stop()
        sim.close()
    return report(raw, rtts, n, line_stats, bb_version, time.monotonic() - started)


def errors(rounds: list[dict[str, float]], key: str, truth: float) -> list[float]:
    return [r[key] - truth for r in rounds if key in r]


def report(raw: dict[str, Any], rtts: Sequence[float], n: int, line_stats: Any, bb_version: str,
           seconds: float) -> BenchResult:
    rows = []
    summary: dict[str, Any] = {}
    compared: dict[str, list[tuple[float, bool, float, float]]] = {}
    for kind in ("tcp", "https"):
        for rtt in rtts:
            data = raw[kind][f"{rtt:g}"]
            ours_rounds, bb_rounds = data["rounds"]["ours"], data["rounds"]["blackbox"]
            for label, ours_key, bb_key in COMPARED[kind] + INFO_ONLY.get(kind, []):
                informational = label.startswith("total")
                truth = rtt * (3 if informational else 1)
                e_ours, e_bb = errors(ours_rounds, ours_key, truth), errors(bb_rounds, bb_key, truth)
                m_ours, m_bb = median(e_ours), median(e_bb)
                ok = abs(m_ours) <= abs(m_bb) and (kind != "tcp" or abs(m_ours) <= TCP_GOAL)
                rows.append([kind, f"{rtt * 1e3:g}", label, ms(m_ours), ms(percentile(e_ours, 90)), ms(m_bb),
                             ms(percentile(e_bb, 90)), f"{len(e_ours)}/{len(e_bb)}",
                             "info" if informational else ("**PASS**" if ok else "**MISS**")])
                summary[f"{kind}.{label}.{rtt:g}"] = {
                    "ours_median": m_ours, "blackbox_median": m_bb, "ours_p90": percentile(e_ours, 90),
                    "blackbox_p90": percentile(e_bb, 90), "n_ours": len(e_ours), "n_blackbox": len(e_bb)}
                if not informational:
                    compared.setdefault(f"{kind} {label}", []).append((rtt, ok, m_ours, m_bb))
            if data["failures"]["ours"] or data["failures"]["blackbox"]:
                summary[f"{kind}.failures.{rtt:g}"] = data["failures"]
    goals = []
    for key, results in compared.items():
        misses = [r for r in results if not r[1]]
        shown = misses or [min(results, key=lambda r: abs(r[3]) - abs(r[2]))]  # else where ours leads least
        text = "; ".join(f"{rtt * 1e3:g} ms: ours {ms(mo)} vs {ms(mb)}" for rtt, _, mo, mb in shown)
        goal = "median error ≤ blackbox's at every RTT" + (" and ≤ 0.3 ms" if key.startswith("tcp") else "")
        goals.append(Goal(what=f"accuracy, {key}", goal=goal,
                          measured=f"{'miss at' if misses else 'closest at'} {text} (ms)", passed=not misses))
    lateness = (f"Delay line during the run: {line_stats.forwarded} packets, release lateness p50 "
                f"{ms(line_stats.lateness_p50 or 0)} ms, p99 {ms(line_stats.lateness_p99 or 0)} ms, max "
                f"{ms(line_stats.lateness_max or 0)} ms; {line_stats.lost} lost.")
    failures = {k: v for k, v in summary.items() if ".failures." in k}
    body = "\n".join([
        section_header(command_line()),
        f"{len(rtts)} simulated regions x {n} probes per kind, our probes and blackbox_exporter {bb_version} "
        "alternating on the same paths (10 worker processes in the client namespace, one per region and kind). "
        "Error = measured - truth (ms); truth = 1 RTT for connect, TLS 1.3 handshake and time to first byte, "
        "3 RTT for a whole HTTPS probe. Blackbox's tcp_connect has no connect phase: its "
        "`probe_duration_seconds` is compared. Blackbox's `processing` phase is gotConn → first response byte.",
        "",
        lateness + (f" Failed probes: {failures}." if failures else " No probe failed."),
        "",
        md_table(["probe", "RTT ms", "phase", "ours median", "ours p90", "blackbox median", "blackbox p90",
                  "n ours/bb", "ours ≤ blackbox"], rows),
    ])
    return BenchResult(key="accuracy", title=SECTIONS["accuracy"], body=body, goals=goals, seconds=seconds,
                       raw={"summary": summary, "raw": raw})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=PROBES, help="probes per region and kind (default 50)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from bench.report import finish

    return finish(run(n=args.n), write=not args.no_report)


if __name__ == "__main__":
    sys.exit(main())
