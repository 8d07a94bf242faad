"""`python -m bench`: run every benchmark (about 7 minutes) and rewrite bench/BENCHMARKS.md.

Needs root (network namespaces and TUN devices for the simulated regions) and Debian's
prometheus-blackbox-exporter. Each benchmark builds and tears down its own simulator, so each also runs alone:
`python -m bench.accuracy`, `bench.sweep`, `bench.scrape`, `bench.footprint`, `bench.warmstart`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from bench import accuracy, footprint, scrape, sweep, warmstart
from bench.common import BenchResult, command_line, machine_line, write_raw
from bench.report import print_result, update_report

BUDGET = 600.0  # the whole suite must end within 10 minutes


def benchmarks(quick: bool) -> dict[str, Callable[[], BenchResult]]:
    """Name -> runner; `quick` shrinks every benchmark to check the harness, not to measure."""
    if quick:
        return {
            "accuracy": lambda: accuracy.run(n=5),
            "sweep": lambda: sweep.run(repeats=2),
            "scrape": lambda: scrape.run(levels=(1, 10), rounds=1),
            "footprint": lambda: footprint.run(duration=30),
            "warmstart": lambda: warmstart.run(warm_runs=1),
        }
    return {"accuracy": accuracy.run, "sweep": sweep.run, "scrape": scrape.run, "footprint": footprint.run,
            "warmstart": warmstart.run}


def preflight() -> str | None:
    """Why the suite cannot run here, or None."""
    if os.geteuid() != 0:
        return "run as root: the simulated regions need network namespaces and TUN devices"
    try:
        from bench.blackbox import binary

        binary()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(benchmarks(False)),
                        help="run just this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny runs to check the harness (numbers not meaningful; report left alone)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    problem = preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    selected = {name: fn for name, fn in benchmarks(args.quick).items() if not args.only or name in args.only}
    header = f"Last full run: {machine_line()}. Command: `{command_line()}`."
    started = time.monotonic()
    results: list[BenchResult] = []
    for name, fn in selected.items():
        print(f"-- {name} ({time.monotonic() - started:.0f} s into the suite)", flush=True)
        result = fn()
        write_raw(result.key, result.raw)
        print_result(result)
        results.append(result)
    total = time.monotonic() - started
    full = len(selected) == len(benchmarks(False))
    verdict = "within" if total <= BUDGET else "OVER"
    header += f" Took {total:.0f} s ({verdict} the {BUDGET / 60:.0f}-minute budget)."
    if not (args.quick or args.no_report):
        path = update_report(results, full_run=header if full else None)
        print(f"updated {path}")
    print(f"\n{header}")
    for result in results:
        for g in result.goals:
            print(f"  {g.verdict}  {g.what}: {g.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
