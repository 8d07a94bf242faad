"""Cache integrity (issue 10): a seeded fuzz of damaged cache files, and `kill -9` of a process saving non-stop.

    .venv/bin/python -m bench.cache_integrity fuzz [--n 1000] [--seed 10]
    .venv/bin/python -m bench.cache_integrity kill [--n 100]

`fuzz` writes N damaged cache files of the kinds issue 10 found (one bad value among good regions, NaN or
±Infinity timestamps, invalid UTF-8, deep nesting, huge integers, truncation, random bytes; and intact
documents as a control), starts `RegionLatencyTracker(cache=FileCache(path))` on each, adds a sample and
flushes, and counts what went wrong: a start that raised, a save that did not land, a non-finite value
loaded, a good region not loaded, a damaged original overwritten with no `.corrupt-*` copy of it. It uses only
the API older versions had too, so `PYTHONPATH=<old checkout>/exporter` measures the code before the fix.

`kill` starts a writer process (a tracker on a FileCache, behind a PrefixedCache as in the exporter, saving on
every sample without pause), kills it with SIGKILL at a random moment, checks the file, and starts the next
writer on it, N times. It counts files that are not valid JSON, sample counts that went backwards, temporary
files a kill left, and those still there after the next start. Figures: docs/OPERATIONS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CACHE_KEY = "region_latencies"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1", "sa-east-1"]
BAD_EMAS = ["-0.5", "NaN", "Infinity", "1e309", "9" * 400, "9" * 5000, '"fast"', "true", "null", "[0.1]"]
BAD_COUNTS = ["0", "-3", "1.5", "9" * 4300, "9" * 5000, "NaN", '"7"']
BAD_STAMPS = ["NaN", "Infinity", "-Infinity", "1e309", '"yesterday"', "[]"]
KINDS = ["bad-value", "bad-value", "bad-value", "bad-timestamp", "invalid-utf8", "deep", "huge-int", "truncated",
         "random-bytes", "valid"]


@dataclass
class Sample:
    kind: str
    raw: bytes
    good: set[str]
    flawless: bool


def make_sample(rng: random.Random) -> Sample:
    """One damaged (or, for the control, intact) cache file and the regions a correct loader keeps."""
    kind = rng.choice(KINDS)
    names = rng.sample(REGIONS, rng.randint(2, len(REGIONS)))
    metrics = {r: f"{rng.uniform(0.005, 0.4):.6f}" for r in names}
    counts = {r: str(rng.randint(1, 5000)) for r in names}
    stamps = {r: f"{rng.uniform(1.69e9, 1.7e9):.3f}" for r in names}
    updated = f"{1.7e9:.1f}"
    bad = rng.choice(names)
    good = set(names)
    if kind == "bad-value":
        where = rng.choice(["metrics", "counts", "stamps"])
        {"metrics": metrics, "counts": counts, "stamps": stamps}[where][bad] = rng.choice(
            {"metrics": BAD_EMAS, "counts": BAD_COUNTS, "stamps": BAD_STAMPS}[where])
        good.discard(bad)
    elif kind == "bad-timestamp":
        if rng.random() < 0.5:
            updated = rng.choice(BAD_STAMPS[:4])
            for r in rng.sample(names, rng.randint(0, len(names))):
                del stamps[r]  # these fall back to updated_at; they load without a timestamp
        else:
            stamps[bad] = rng.choice(BAD_STAMPS[:4])
            good.discard(bad)
    elif kind == "huge-int":
        counts[bad] = "7" * rng.randint(4301, 6000)
        good.discard(bad)

    def section(values: dict[str, str]) -> str:
        return "{" + ", ".join(f'"{r}": {v}' for r, v in values.items()) + "}"

    document = (f'{{"{CACHE_KEY}": {{"metrics": {section(metrics)}, "counts": {section(counts)}, '
                f'"updated_at": {updated}, "last_sample_at": {section(stamps)}}}}}')
    raw = document.encode()
    flawless = kind == "valid"
    if kind == "invalid-utf8":
        raw = raw[:-2] + b', "note": "\xff\xfe"' + raw[-2:]
        good = set()
    elif kind == "deep":
        depth = rng.randint(900, 1500)
        raw = raw[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
        good = set()
    elif kind == "truncated":
        raw = raw[: rng.randint(1, len(raw) - 2)]
        good = set()
    elif kind == "random-bytes":
        raw = rng.randbytes(rng.randint(1, 400))
        good = set()
    return Sample(kind, raw, good, flawless)


@dataclass
class FuzzResult:
    documents: int = 0
    start_crashed: int = 0
    saves_stopped: int = 0
    non_finite_loaded: int = 0
    good_regions: int = 0
    good_regions_lost: int = 0
    documents_losing_good_regions: int = 0
    damaged_overwritten_without_copy: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)


def fuzz(n: int = 1000, seed: int = 10) -> FuzzResult:
    """Run `n` damaged cache files through a tracker; count every broken promise."""
    import logging

    from region_latency.cache import FileCache
    from region_latency.tracker import RegionLatencyTracker

    logging.disable(logging.CRITICAL)  # thousands of expected warnings
    rng = random.Random(seed)
    result = FuzzResult()
    for i in range(n):
        sample = make_sample(rng)
        result.documents += 1
        result.by_kind[sample.kind] += 1
        result.good_regions += len(sample.good)
        with tempfile.TemporaryDirectory(prefix="cache-fuzz-") as tmp:
            path = Path(tmp) / "latencies.json"
            path.write_bytes(sample.raw)
            try:
                tracker = RegionLatencyTracker(cache=FileCache(path), save_interval=0, clock=lambda: 1.7e9)
            except Exception as exc:
                result.start_crashed += 1
                result.errors[f"start: {type(exc).__name__}"] += 1
                result.good_regions_lost += len(sample.good)
                result.documents_losing_good_regions += bool(sample.good)
                continue
            loaded = tracker.snapshot().regions
            if any(not math.isfinite(s.ema or 0) or not math.isfinite(s.last_sample_at or 0)
                   for s in loaded.values()):
                result.non_finite_loaded += 1
            lost = len(sample.good - set(loaded))
            result.good_regions_lost += lost
            result.documents_losing_good_regions += bool(lost)
            try:
                tracker.update_latency(f"fuzz-{i}", 0.25)
                tracker.flush()
            except Exception as exc:
                result.errors[f"save: {type(exc).__name__}"] += 1
            try:
                saved = json.loads(path.read_bytes().decode("utf-8"))[CACHE_KEY]
                landed = saved["metrics"].get(f"fuzz-{i}") == 0.25
            except Exception:
                landed = False
            result.saves_stopped += not landed
            copies = [p.read_bytes() for p in Path(tmp).glob("latencies.json.corrupt-*")]
            if not sample.flawless and landed and sample.raw not in copies:
                result.damaged_overwritten_without_copy += 1
            close = getattr(tracker, "close", None)
            if close is not None:
                close()
    logging.disable(logging.NOTSET)
    return result


WRITER = """
import random, sys
from region_latency.cache import FileCache, PrefixedCache
from region_latency.tracker import RegionLatencyTracker

tracker = RegionLatencyTracker(cache=PrefixedCache(FileCache(sys.argv[1]), "bedrock-https"), save_interval=0)
print("ready", flush=True)
rng = random.Random()
while True:  # every sample is a save: the process is almost always inside a write when killed
    tracker.update_latency(rng.choice(REGIONS), rng.uniform(0.01, 0.3))
""".replace("REGIONS", repr(REGIONS[:5]))


@dataclass
class KillResult:
    kills: int = 0
    unreadable_files: int = 0
    counts_went_backwards: int = 0
    kills_leaving_temp_files: int = 0
    temp_files_after_next_start: int = 0
    """Summed over the starts: temporary files of the kill before that the start did not remove."""
    temp_files_at_end: int = 0
    corrupt_copies_made: int = 0
    samples_saved: int = 0
    seconds: float = 0.0


def temp_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]


def read_counts(path: Path) -> dict[str, int] | None:
    """The sample counts in the file, or None when it is not a valid document."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
        counts = document[f"bedrock-https/{CACHE_KEY}"]["counts"]
        return {str(k): int(v) for k, v in counts.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def kill(n: int = 100, seed: int = 7, directory: Path | None = None) -> KillResult:
    """`n` times: start the writer on the same file, SIGKILL it at a random moment, check what it left."""
    rng = random.Random(seed)
    result = KillResult()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cache-kill-", dir=directory) as tmp:
        path = Path(tmp) / "latencies.json"
        before: dict[str, int] = {}
        leftover: set[Path] = set()  # temporary files the previous kill left: the next start must remove them
        for _ in range(n):
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            try:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the writer did not start (exit {proc.wait(10)})")
                result.temp_files_after_next_start += len(leftover & set(temp_files(path)))
                time.sleep(rng.uniform(0.002, 0.05))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                if proc.stdout is not None:
                    proc.stdout.close()
            result.kills += 1
            leftover = set(temp_files(path))
            result.kills_leaving_temp_files += bool(leftover)
            counts = read_counts(path)
            if counts is None:
                result.unreadable_files += 1
                continue
            if any(counts.get(region, 0) < count for region, count in before.items()):
                result.counts_went_backwards += 1
            before = counts
        result.samples_saved = sum(before.values())
        result.corrupt_copies_made = len(list(Path(tmp).glob("latencies.json.corrupt-*")))
        from region_latency.cache import FileCache

        FileCache(path)  # the next start
        result.temp_files_at_end = len(temp_files(path))
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_integrity", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["fuzz", "kill"])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.what == "fuzz":
        fuzz_result = fuzz(args.n or 1000, 10 if args.seed is None else args.seed)
        for name, value in vars(fuzz_result).items():
            print(f"{name}: {dict(value) if isinstance(value, Counter) else value}")
    else:
        kill_result = kill(args.n or 100, 7 if args.seed is None else args.seed)
        for name, value in vars(kill_result).items():
            print(f"{name}: {round(value, 1) if isinstance(value, float) else value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
