"""The benchmark runner rewrites only its own sections of BENCHMARKS.md (no timing is asserted here)."""

from __future__ import annotations

from pathlib import Path

from bench.common import BenchResult, Goal, percentile
from bench.report import SECTIONS, SUMMARY, split_sections, update_report

FOREIGN = """## Ranking policy on traces

Written by bench/ranking_eval.py.

```
## not a heading inside a fence
```
| keep | this |
"""


def result(key: str, passed: bool, body: str = "numbers") -> BenchResult:
    return BenchResult(key=key, title=SECTIONS[key], body=body, goals=[Goal(f"{key} line", "goal", "measured", passed)])


def test_foreign_section_is_kept_byte_for_byte_and_rows_are_replaced(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nold preamble\n\n" + FOREIGN)
    update_report([result("sweep", True), result("scrape", False)], path=report, full_run="Last full run: today.")
    update_report([result("sweep", False, body="newer numbers")], path=report)
    text = report.read_text()
    assert text.endswith(FOREIGN)
    _, sections = split_sections(text)
    headings = [heading for heading, _ in sections]
    assert headings == [SUMMARY, SECTIONS["sweep"], SECTIONS["scrape"], "Ranking policy on traces"]
    summary = dict(sections)[SUMMARY]
    assert "Last full run: today." in summary
    assert summary.count("| sweep line |") == 1 and "| sweep line | goal | measured | **MISS** |" in summary
    assert "| scrape line |" in summary and "0 of 2 goals met" in summary
    assert "newer numbers" in dict(sections)[SECTIONS["sweep"]]


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
