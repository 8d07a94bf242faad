"""Issue 10's findings, one test each: no cache content crashes the tracker, stops its saves or is lost silently.

Each test writes a damaged cache file, starts a tracker on it, and checks the three promises: the tracker
starts (with whatever good regions the file held), what it could not load is kept aside as
`<name>.corrupt-<epoch>` before anything overwrites it, and the next save succeeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from pathlib import Path

import pytest

from region_latency.cache import CACHE_KEY, FileCache
from region_latency.tracker import RegionLatencyTracker

GOOD = {"us-east-1": 0.05, "eu-west-1": 0.09, "ap-south-1": 0.2, "sa-east-1": 0.15, "us-west-2": 0.07}
GOOD_COUNTS = {"us-east-1": 7, "eu-west-1": 3, "ap-south-1": 12, "sa-east-1": 1, "us-west-2": 40}


def start(path: Path) -> RegionLatencyTracker:
    return RegionLatencyTracker(cache=FileCache(path), save_interval=0, clock=lambda: 1_700_000_000.0)


def raw_document(metrics: str, counts: str, extra: str = "") -> str:
    """The tracker's document as text, so that tests can put tokens in it that json.dumps never writes."""
    return f'{{"{CACHE_KEY}": {{"metrics": {metrics}, "counts": {counts}{extra}}}}}'


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def assert_next_save_works(tracker: RegionLatencyTracker, path: Path) -> dict[str, object]:
    """A new sample is saved: the file is valid JSON again and holds it."""
    tracker.update_latency("me-south-1", 0.3)
    tracker.flush()
    document = json.loads(path.read_bytes().decode("utf-8"))[CACHE_KEY]
    assert document["metrics"]["me-south-1"] == 0.3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return dict(document)


def test_a_400_digit_ema_does_not_crash_the_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    metrics = json.dumps(GOOD)[:-1] + ', "eu-north-1": ' + "9" * 400 + "}"
    path.write_text(raw_document(metrics, json.dumps(GOOD_COUNTS)))
    original = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        tracker = start(path)  # was: OverflowError: int too large to convert to float
    assert {r: tracker.get_latency(r) for r in tracker.regions()} == GOOD
    assert "eu-north-1" in caplog.text
    assert_next_save_works(tracker, path)
    assert [p.read_bytes() for p in corrupt_copies(path)] == [original]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"region_latencies": {"metrics": {"us-east-1": 0.1}}, "x": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"[" * 1000 + b"]" * 1000, id="nested-1000-deep"),
        pytest.param(b'{"other": {"a": ' + b"[" * 990 + b"]" * 990 + b"}}", id="nested-990-deep-inside"),
        pytest.param(b'{"region_latencies": {"metrics": {"a": 0.1}, "counts": {"a": ' + b"7" * 4400 + b"}}}",
                     id="int-over-4300-digits"),
        pytest.param(b"\x00\x01garbage", id="binary"),
        pytest.param(b'{"region_latencies": {"metrics": {"a": 0.1}', id="truncated"),
    ],
)
def test_content_that_cannot_be_read_never_stops_saving(content: bytes, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        tracker = start(path)
        assert_next_save_works(tracker, path)  # was: every save failed, the file was never replaced
        tracker.update_latency("me-south-1", 0.1)
        tracker.flush()
    assert tracker.saver is not None and tracker.saver.status.saves_failed_total == 0
    copies = corrupt_copies(path)
    assert [p.read_bytes() for p in copies] == [content]  # kept once, byte for byte
    assert str(path) in caplog.text and copies[0].name in caplog.text  # the log names the file and the copy


@pytest.mark.parametrize("where", ["last_sample_at", "updated_at"])
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_non_finite_timestamps_are_refused(where: str, token: str, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    stamps = {r: 1_699_999_000.0 for r in GOOD}
    if where == "last_sample_at":
        body = json.dumps(stamps)[:-1] + f', "eu-north-1": {token}}}'
        metrics = dict(GOOD, **{"eu-north-1": 0.3})
        path.write_text(raw_document(json.dumps(metrics), json.dumps(GOOD_COUNTS),
                                     f', "updated_at": 1699999999.0, "last_sample_at": {body}'))
    else:
        path.write_text(raw_document(json.dumps(GOOD), json.dumps(GOOD_COUNTS), f', "updated_at": {token}'))
    with caplog.at_level(logging.WARNING):
        tracker = start(path)
    snapshot = tracker.snapshot()
    assert set(snapshot.regions) == set(GOOD)  # the good regions load; a region with a bad stamp does not
    for stats in snapshot.regions.values():
        assert stats.last_sample_at is None or math.isfinite(stats.last_sample_at)
        assert stats.ema is not None and math.isfinite(stats.ema)
    document = assert_next_save_works(tracker, path)
    json.dumps(document, allow_nan=False)
    assert len(corrupt_copies(path)) == 1
    assert "eu-north-1" in caplog.text or "updated_at" in caplog.text


def test_a_4300_digit_sample_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    counts = json.dumps(GOOD_COUNTS)[:-1] + ', "eu-north-1": ' + "9" * 4300 + "}"
    metrics = dict(GOOD, **{"eu-north-1": 0.3})
    path.write_text(raw_document(json.dumps(metrics), counts))
    tracker = start(path)  # was: loaded, and then no save could write it back
    assert set(tracker.regions()) == set(GOOD)
    assert_next_save_works(tracker, path)


def test_one_bad_region_drops_only_itself_and_the_original_is_kept(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    metrics = dict(GOOD, **{"eu-north-1": -0.5})
    path.write_text(json.dumps({CACHE_KEY: {"metrics": metrics, "counts": GOOD_COUNTS, "updated_at": 1.7e9}}))
    original = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        tracker = start(path)  # was: every region dropped
    assert {r: tracker.get_latency(r) for r in tracker.regions()} == GOOD
    assert {r: tracker.get_sample_count(r) for r in tracker.regions()} == GOOD_COUNTS
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("eu-north-1" in m and "invalid latency cache" in m for m in warnings)
    assert_next_save_works(tracker, path)
    assert [p.read_bytes() for p in corrupt_copies(path)] == [original]  # was: overwritten, no copy kept


def test_orphaned_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    FileCache(path).set(CACHE_KEY, {"metrics": {"a": 0.1}, "counts": {"a": 1}})
    orphans = [tmp_path / f".latencies.json.{suffix}.tmp" for suffix in ("abc123", "x_9", "0")]
    for orphan in orphans:
        orphan.write_text('{"half": ')
    unrelated = [tmp_path / ".other.json.abc.tmp", tmp_path / "latencies.json.tmp-notes"]
    for other in unrelated:
        other.write_text("keep me")
    tracker = start(path)
    assert tracker.get_latency("a") == 0.1
    assert not any(orphan.exists() for orphan in orphans)  # was: left behind by kill -9 forever
    assert all(other.exists() for other in unrelated)


def test_corrupt_copies_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    for i in range(12):
        path.write_bytes(b"not json %d" % i)
        tracker = start(path)
        assert_next_save_works(tracker, path)
    copies = corrupt_copies(path)
    assert 1 <= len(copies) <= 5
    assert copies and b"not json 11" in {p.read_bytes() for p in copies}  # the newest is kept


def test_copies_and_new_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    path.write_bytes(b"{broken")
    os.chmod(path, 0o644)
    tracker = start(path)
    assert_next_save_works(tracker, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [stat.S_IMODE(p.stat().st_mode) for p in corrupt_copies(path)] == [0o600]


def test_what_cannot_be_kept_aside_is_never_overwritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latencies.json"
    path.mkdir()  # neither readable as a file, nor linkable, nor copyable
    (path / "precious").write_text("keep")
    with caplog.at_level(logging.WARNING):
        tracker = start(path)
        for _ in range(20):
            tracker.update_latency("r", 0.1)
            tracker.flush()
    assert tracker.saver is not None and tracker.saver.status.saves_failed_total >= 20
    assert (path / "precious").read_text() == "keep"
    assert caplog.text.count("could not save latency metrics") == 1
    assert "not overwriting it" in caplog.text
    assert tracker.get_sample_count("r") == 20
