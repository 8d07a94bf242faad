"""Rewrites bench/BENCHMARKS.md: only this suite's sections, leaving every other `## ` section as it is.

`## Ranking policy on traces` belongs to bench/ranking_eval.py, which rewrites it itself; this module never
touches a section whose heading is not one of the suite's. A single benchmark run alone replaces its own
section and its own rows of the summary table, so the file always holds the latest number of each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.common import BENCH_DIR, BenchResult, machine_line

REPORT = BENCH_DIR / "BENCHMARKS.md"
SUMMARY = "Summary"
# The suite's sections in order: key -> heading. Anything else in the file belongs to someone else.
SECTIONS: dict[str, str] = {
    "accuracy": "1. Accuracy against blackbox_exporter",
    "sweep": "2. Sweep time",
    "scrape": "3. Scrape cost",
    "footprint": "4. Footprint",
    "warmstart": "5. Warm start",
    "server": "6. HTTP server: ours against uvicorn",
    "scale": "7. Scale: 100 to 3,000 pairs in one process",
    "probe_cpu": "8. Probe CPU: h11 alone against httpcore",
}
OWNED = {SUMMARY, *SECTIONS.values()}
TITLE = "# Benchmarks"
PREAMBLE = f"""{TITLE}

Measured side by side on one machine, in one run, against simulated regions whose round-trip time is put on the
packets themselves (`region_latency_devkit.netsim`: a TUN delay line between network namespaces, see docs/NETSIM.md).
Every number is a median (or the stated percentile) of repeated measurements; a ratio compares two things measured
in the same run. Goals come from issue 4; a MISS is reported as measured, with where the cost goes.

Run all five (as root, needs `ip netns`, about 6-8 minutes): `.venv/bin/python -m bench`
One alone: `.venv/bin/python -m bench.accuracy` (or `sweep`, `scrape`, `footprint`, `warmstart`).
Options: `.venv/bin/python -m bench --help`. Raw numbers and process logs of the latest run: `bench/.out/`.

The sections below the summary are rewritten by `python -m bench` (each benchmark rewrites its own section and
summary rows); `## Ranking policy on traces` is written by `bench/ranking_eval.py` and left alone.
"""
_HEADING = re.compile(r"^## (.+?)\s*$")


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(heading, whole section text including its heading line)]); fenced code never splits."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            sections.append((m.group(1), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(heading, "".join(lines)) for heading, lines in sections]


def _section(heading: str, body: str) -> str:
    return f"## {heading}\n\n{body.strip()}\n\n"


def _summary_rows(section_text: str) -> dict[str, list[str]]:
    """Rows of an existing summary table, grouped by their first cell (the benchmark's key heading)."""
    rows: dict[str, list[str]] = {}
    for line in section_text.splitlines():
        if line.startswith("| ") and not line.startswith("| Benchmark |"):
            first = line.split("|")[1].strip()
            if first in SECTIONS.values():
                rows.setdefault(first, []).append(line)
    return rows


def _summary(results: Sequence[BenchResult], previous: str, full_run: str | None) -> str:
    rows = _summary_rows(previous)
    for result in results:
        rows[result.title] = [
            f"| {result.title} | {g.what} | {g.goal} | {g.measured} | **{g.verdict}** |" for g in result.goals
        ]
    table = ["| Benchmark | What | Goal | Measured | Result |", "|---|---|---|---|---|"]
    for title in SECTIONS.values():
        table += rows.get(title, [])
    passed = sum(line.endswith("**PASS** |") for title in SECTIONS.values() for line in rows.get(title, []))
    total = sum(len(rows.get(title, [])) for title in SECTIONS.values())
    lines = []
    if full_run:
        lines.append(full_run)
    else:
        kept = [ln for ln in previous.splitlines() if ln.startswith("Last full run:")]
        lines += kept
    lines.append(f"{passed} of {total} goals met. Each section says when and how its numbers were measured.")
    return "\n\n".join(lines) + "\n\n" + "\n".join(table)


def update_report(results: Sequence[BenchResult], *, full_run: str | None = None, path: Path = REPORT) -> Path:
    """Replace the sections of `results` (and their summary rows) in the report; keep everything else."""
    text = path.read_text() if path.exists() else PREAMBLE
    _, sections = split_sections(text)  # the preamble (title and how to run) is the suite's: always rewritten
    new = {result.title: _section(result.title, result.body) for result in results}
    previous_summary = next((body for heading, body in sections if heading == SUMMARY), "")
    new[SUMMARY] = _section(SUMMARY, _summary(results, previous_summary, full_run))
    order = [SUMMARY, *SECTIONS.values()]
    out = [(heading, new.pop(heading, body)) for heading, body in sections]
    for heading in order:  # ours not in the file yet: right after the nearest earlier one of ours, else first
        if heading in new:
            earlier = set(order[: order.index(heading)])
            anchor = max((i for i, (h, _) in enumerate(out) if h in earlier), default=-1)
            out.insert(anchor + 1, (heading, new.pop(heading)))
    # other owners' sections stay byte for byte; ours end with a blank line
    text = PREAMBLE.rstrip() + "\n\n" + "".join(body if body.endswith("\n") else body + "\n" for _, body in out)
    path.write_text(text)
    return path


def section_header(command: str, extra: str = "") -> str:
    """The first lines of a section: when, on what, and with which command its numbers were measured."""
    return f"Measured {machine_line()}.\nCommand: `{command}`{extra}\n"


def print_result(result: BenchResult) -> None:
    print(f"\n== {result.title} ({result.seconds:.0f} s)\n{result.body}\n", flush=True)
    for g in result.goals:
        print(f"  {g.verdict}  {g.what}: {g.measured}  [goal: {g.goal}]", flush=True)


def finish(result: BenchResult, *, write: bool = True) -> int:
    """End of a benchmark run alone: print it, keep its raw numbers, rewrite its part of the report."""
    from bench.common import write_raw

    print_result(result)
    write_raw(result.key, result.raw)
    if write:
        print(f"updated {update_report([result])}")
    return 0
