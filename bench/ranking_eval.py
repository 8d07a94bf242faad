"""Ranking policy on traces: the trusted policy against the plan's plain EMA sort, on simulated latency traces.

Replays `region_latency_devkit.tracesim.standard_scenarios` (24 simulated hours at a 30 s interval by default) for
several seeds, measures both policies against the traces' ground truth, and rewrites only the
`## Ranking policy on traces` section of bench/BENCHMARKS.md (every other section is left byte for byte).

    .venv/bin/python bench/ranking_eval.py [--hours 24] [--seeds 5] [--tick 5] [--print-only]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from region_latency.ranking import PlainRanking, TrustedRanking
from region_latency_devkit.tracesim import (
    SCHEDULER_JITTER,
    PolicyFactory,
    PolicyMetrics,
    Scenario,
    measure_run,
    simulate,
    standard_scenarios,
)

HEADING = "Ranking policy on traces"
REPORT = Path(__file__).resolve().parent / "BENCHMARKS.md"
DOC = Path(__file__).resolve().parent.parent / "docs" / "RANKING.md"
DOC_BEGIN, DOC_END = "<!-- ranking_eval: begin -->", "<!-- ranking_eval: end -->"
INTERVAL = 30.0
TIMEOUT = 5.0
JITTER = SCHEDULER_JITTER

Factory = PolicyFactory
MAIN: dict[str, Factory] = {"trusted": TrustedRanking, "plain": lambda interval: PlainRanking()}
# Knob variants, run on the scenarios that decide the defaults (same probe results as the main run).
VARIANTS: dict[str, Factory] = {
    "5 %, 2 ms, K=3 (the issue's example)": lambda iv: TrustedRanking(iv, margin_absolute=0.002, switch_after=3),
    "5 %, 2 ms, K=1": lambda iv: TrustedRanking(iv, margin_absolute=0.002),
    "5 %, 4 ms, K=2": lambda iv: TrustedRanking(iv, switch_after=2),
    "defaults, leader does not yield on a failure": lambda iv: TrustedRanking(iv, leader_yields_on_failure=False),
}
VARIANT_SCENARIOS = ("close pair", "equal pair", "step 2x", "dead #1", "lossy")


@dataclass(frozen=True)
class Pooled:
    """One policy's metrics on one scenario, over all seeds."""

    runs: tuple[PolicyMetrics, ...]

    def mean(self, attr: str) -> float:
        return statistics.fmean(getattr(m, attr) for m in self.runs)

    def worst_swaps(self) -> float:
        return max(m.swaps_per_hour for m in self.runs)

    def reactions(self, label: str, *, after_failure: bool = False) -> list[float | None]:
        return [x for m in self.runs for x in (m.after_first_failure if after_failure else m.reactions)[label]]


def _policies(scenario: Scenario) -> dict[str, Factory]:
    return {**MAIN, **(VARIANTS if scenario.name in VARIANT_SCENARIOS else {})}


def _one(scenario: Scenario, seed: int, tick: float) -> dict[str, PolicyMetrics]:
    """One scenario and seed; a module-level function so that a process pool can run it."""
    return measure_run(scenario, simulate(scenario, _policies(scenario), seed=seed, tick=tick))


def run_all(scenarios: Sequence[Scenario], seeds: int, tick: float, jobs: int) -> dict[str, dict[str, Pooled]]:
    """scenario name -> policy name -> pooled metrics; variants only on VARIANT_SCENARIOS.

    Runs are independent and seeded, so the numbers do not depend on `jobs`.
    """
    work = [(scenario, seed) for scenario in scenarios for seed in range(seeds)]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(_one, *zip(*work, strict=True), [tick] * len(work)))
    else:
        done = [_one(scenario, seed, tick) for scenario, seed in work]
    out: dict[str, dict[str, Pooled]] = {}
    for scenario in scenarios:
        per_seed = [metrics for (sc, _), metrics in zip(work, done, strict=True) if sc is scenario]
        out[scenario.name] = {name: Pooled(tuple(run[name] for run in per_seed)) for name in _policies(scenario)}
    return out


# -- formatting ------------------------------------------------------------------------------------------------------


def seconds(values: Iterable[float | None]) -> str:
    """`mean s (max s)` over the events that happened, plus how many never did."""
    data = list(values)
    done = [v for v in data if v is not None]
    never = len(data) - len(done)
    if not done:
        return f"never ({never} of {len(data)})"
    text = f"{statistics.fmean(done):.0f} s (max {max(done):.0f} s)"
    return text + (f", never {never} of {len(data)}" if never else "")


def verdict(values: Sequence[float | None], limit: float) -> str:
    done = [v for v in values if v is not None]
    if len(done) < len(values) or not done:
        return "MISS"
    if max(done) <= limit:
        return "PASS"
    return "PASS on average, MISS worst case" if statistics.fmean(done) <= limit else "MISS"


def goals_table(results: Mapping[str, Mapping[str, Pooled]]) -> list[str]:
    dead, step = results["dead #1"], results["step 2x"]
    rows = ["| Goal | Trusted (default) | Plain EMA sort | Result (trusted) |", "|---|---|---|---|"]
    leave = dead["trusted"].reactions("dead: leaves #1")
    policy_share = [v for v in dead["trusted"].reactions("dead: leaves #1", after_failure=True) if v is not None]
    rows.append(
        f"| A dead #1 leaves #1 within one interval ({INTERVAL:.0f} s), from the death | {seconds(leave)}; "
        f"{max(policy_share, default=float('nan')):.0f} s after its first failed probe | "
        f"{seconds(dead['plain'].reactions('dead: leaves #1'))} | **{verdict(leave, INTERVAL)}** |")
    for name in ("close pair", "equal pair"):
        t, p = results[name]["trusted"], results[name]["plain"]
        rows.append(f"| The {name} swaps #1 at most once an hour (worst seed) | {t.worst_swaps():.2f} /h | "
                    f"{p.worst_swaps():.1f} /h | **{'PASS' if t.worst_swaps() <= 1.0 else 'MISS'}** |")
    for label in ("2x slower", "2x faster"):
        follow = step["trusted"].reactions(label)
        rows.append(f"| #1 gets {label[3:]} (2x step) and is followed within 3 intervals ({3 * INTERVAL:.0f} s) | "
                    f"{seconds(follow)} | {seconds(step['plain'].reactions(label))} | "
                    f"**{verdict(follow, 3 * INTERVAL)}** |")
    return rows


def notes(results: Mapping[str, Mapping[str, Pooled]]) -> list[str]:
    """What the goal rows mean, with the numbers that explain a miss."""
    first_probe = INTERVAL * (1 + 2 * JITTER)
    dead = [v for v in results["dead #1"]["trusted"].reactions("dead: leaves #1") if v is not None]
    slower = [v for v in results["step 2x"]["trusted"].reactions("2x slower") if v is not None]
    faster_plain = [v for v in results["step 2x"]["plain"].reactions("2x faster") if v is not None]
    no_yield = results["dead #1"].get("defaults, leader does not yield on a failure")
    lines = [
        f"- Dead #1: the worst case, {max(dead):.0f} s, is the wait for the next probe (up to {first_probe:.0f} s "
        f"with the scheduler's jitter) plus the {TIMEOUT:.0f} s timeout before a failure is known. The policy "
        "itself moves #1 on the first failed probe (0 s after it); only probing more often shortens the rest.",
        f"- 2x slower: the worst case, {max(slower):.0f} s, is {_nth_probe(max(slower))} after the step (a probe "
        f"lands up to {JITTER * INTERVAL:.0f} s off its slot). The plan's EMA needs two samples of 100 ms to pass the "
        "#2's 70 ms; the switch margin can add one more.",
        f"- 2x faster: the plan's EMA itself needs about three samples to come down from 100 ms past 70 ms "
        f"(plain sort: max {max(faster_plain):.0f} s{', a miss too' if max(faster_plain) > 3 * INTERVAL else ''}); "
        "the switch margin adds about one sample. The EMA is the design plan's contract, so this is left as measured.",
    ]
    if no_yield is not None:
        lossy = results["lossy"]
        lines.append(
            "- The first-failure hand-over (`leader_yields_on_failure`) is what makes a dead #1 leave at its first "
            f"failed probe: without it, {seconds(no_yield.reactions('dead: leaves #1'))}. Its cost: "
            f"{lossy['trusted'].mean('swaps_per_hour'):.2f} swaps/h when 1 % of probes fail at random "
            f"(without it: {lossy['defaults, leader does not yield on a failure'].mean('swaps_per_hour'):.2f}).")
    return lines


def _nth_probe(delay: float) -> str:
    """Which probe after a moment can have answered `delay` seconds later, at the latest (slot + jitter)."""
    k = max(1, math.ceil((delay - 2 * JITTER * INTERVAL - 0.5) / INTERVAL))
    return {1: "the first probe", 2: "the second probe", 3: "the third probe"}.get(k, f"probe {k}")


def scenario_table(scenarios: Sequence[Scenario], results: Mapping[str, Mapping[str, Pooled]]) -> list[str]:
    rows = ["| Scenario | Trace | #1 truly fastest | #1 is down | #1 swaps per hour | Reactions (mean, max) |",
            "|---|---|---|---|---|---|"]
    for scenario in scenarios:
        t, p = results[scenario.name]["trusted"], results[scenario.name]["plain"]
        labels = dict.fromkeys(event.label for event in scenario.events)
        reactions = "<br>".join(f"{label}: {seconds(t.reactions(label))} / {seconds(p.reactions(label))}"
                                for label in labels) or "-"
        rows.append(
            f"| {scenario.name} | {scenario.about} | {100 * t.mean('truly_fastest'):.1f} % / "
            f"{100 * p.mean('truly_fastest'):.1f} % | {100 * t.mean('leader_down'):.2f} % / "
            f"{100 * p.mean('leader_down'):.2f} % | {t.mean('swaps_per_hour'):.2f} / {p.mean('swaps_per_hour'):.2f} | "
            f"{reactions} |")
    return rows


def variants_table(results: Mapping[str, Mapping[str, Pooled]]) -> list[str]:
    rows = ["| Trusted policy with | close pair swaps/h (worst) | equal pair swaps/h (worst) | 2x slower followed | "
            "2x faster followed | dead #1 leaves #1 | lossy swaps/h |", "|---|---|---|---|---|---|---|"]
    for name in ("trusted", *VARIANTS):
        label = "defaults: 5 %, 4 ms, K=1" if name == "trusted" else name
        rows.append(
            f"| {label} | {results['close pair'][name].worst_swaps():.2f} | "
            f"{results['equal pair'][name].worst_swaps():.2f} | "
            f"{seconds(results['step 2x'][name].reactions('2x slower'))} | "
            f"{seconds(results['step 2x'][name].reactions('2x faster'))} | "
            f"{seconds(results['dead #1'][name].reactions('dead: leaves #1'))} | "
            f"{results['lossy'][name].mean('swaps_per_hour'):.2f} |")
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = f", load average at start {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}{load}"


def section(args: argparse.Namespace, scenarios: Sequence[Scenario], results: Mapping[str, Mapping[str, Pooled]],
            started: str, where: str, wall: float) -> str:
    cmd = "python bench/ranking_eval.py" + "".join(
        f" --{k} {v:g}" for k, v in (("hours", args.hours), ("seeds", args.seeds), ("tick", args.tick))
        if v != DEFAULTS[k])
    lines = [
        f"## {HEADING}",
        "",
        f"Measured {started} on {where}; {wall:.0f} s wall time. Command: `.venv/bin/{cmd}`",
        "",
        f"Each scenario replays {args.hours:g} simulated hours for {args.seeds} seeds (0..{args.seeds - 1}) through "
        "`region_latency_devkit.tracesim`: a real `RegionLatencyTracker` on a virtual clock, every region probed every "
        f"{INTERVAL:.0f} s with the scheduler's ±10 % jitter, failures answering after the {TIMEOUT:.0f} s timeout, "
        f"and every policy evaluated after each result and on a {args.tick:g} s clock tick. Both policies see the "
        "same results. The ground truth is the trace's true latency (not the EMA): *truly fastest* is the share of "
        "time the published #1 is the region with the lowest true latency among those up; *is down* is the share of "
        "time the published #1 is a region that is down. Goals come from issue 5; see docs/RANKING.md for the policy.",
        "",
        "### Goals",
        "",
        *goals_table(results),
        "",
        *notes(results),
        "",
        "### Every scenario (trusted / plain)",
        "",
        *scenario_table(scenarios, results),
        "",
        "### Knobs that decide the defaults (same runs)",
        "",
        *variants_table(results),
        "",
    ]
    return "\n".join(lines)


# -- the report file --------------------------------------------------------------------------------------------------


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the `## heading` section replaced by `body` (appended when absent); nothing else changes.

    A section runs to the next `## ` line outside a fenced code block, or to the end of the file.
    """
    lines = text.splitlines(keepends=True)
    start = end = None
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("## "):
            continue
        if start is not None:
            end = i
            break
        if line[3:].strip() == heading:
            start = i
    block = body.rstrip("\n") + "\n"
    if start is None:
        return text.rstrip("\n") + "\n\n" + block if text.strip() else "# Benchmarks\n\n" + block
    tail = lines[end:] if end is not None else []
    return "".join(lines[:start]) + block + ("\n" if tail else "") + "".join(tail)


def doc_copy(body: str) -> str:
    """The section without its `## ` heading: for the Evaluation part of docs/RANKING.md."""
    return "\n".join(body.splitlines()[1:]).strip()


def replace_block(doc: str, content: str) -> str:
    """`doc` with the text between the ranking_eval markers replaced by `content`."""
    head, rest = doc.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    return f"{head}{DOC_BEGIN}\n{content}\n{DOC_END}{tail}"


DEFAULTS = {"hours": 24.0, "seeds": 5, "tick": 5.0}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=DEFAULTS["hours"], help="simulated hours per scenario")
    parser.add_argument("--seeds", type=int, default=DEFAULTS["seeds"], help="seeds 0..N-1 per scenario")
    parser.add_argument("--tick", type=float, default=DEFAULTS["tick"], help="clock tick of the simulation (s)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (the numbers do not depend on it)")
    parser.add_argument("--print-only", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    t0 = time.perf_counter()
    scenarios = standard_scenarios(args.hours, INTERVAL, TIMEOUT)
    results = run_all(scenarios, args.seeds, args.tick, max(1, args.jobs))
    body = section(args, scenarios, results, started, where, time.perf_counter() - t0)
    print(body)
    if not args.print_only:
        text = REPORT.read_text() if REPORT.exists() else ""
        REPORT.write_text(replace_section(text, HEADING, body))
        print(f"rewrote the '{HEADING}' section of {REPORT}", file=sys.stderr)
        if DOC.exists() and DOC_BEGIN in (doc := DOC.read_text()):
            DOC.write_text(replace_block(doc, doc_copy(body)))
            print(f"copied the tables into {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
