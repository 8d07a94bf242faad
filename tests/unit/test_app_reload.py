"""Exporter.reload in-process: a good file is applied, a bad one (or one changing `listen`/`cache`) is refused with
one line and the running configuration stays; loads go through the child process (region_latency.resolve) unless
the source says otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from region_latency.app import ConfigSource, Exporter
from region_latency.probes.base import ErrorKind, ProbeResult
from region_latency.ranking import TrustedRanking


def document(listen: str = "127.0.0.1:0", cache: str = "none", regions: tuple[str, ...] = ("r1",)) -> str:
    target = {"name": "t", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
              "endpoints": {r: "https://127.0.0.1:1" for r in regions}, "interval": "10s", "timeout": "1s"}
    return yaml.safe_dump({"listen": listen, "cache": cache, "targets": [target]})


@pytest.fixture(params=[True, False], ids=["isolated", "in-process"])
def exporter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Exporter]:
    path = tmp_path / "config.yaml"
    path.write_text(document())
    running = Exporter(ConfigSource(path, {}, {}, isolated=request.param))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_reload_applies_a_good_file_and_refuses_a_bad_one(exporter: Exporter) -> None:
    path = Path(str(exporter.source.path))
    path.write_text(document(regions=("r1", "r2")))
    assert exporter.reload() is None
    assert exporter.resolved.targets[0].regions == ("r1", "r2")

    path.write_text("targets: [{service: bedrok-runtime}]\n")
    error = exporter.reload()
    assert error is not None and error.startswith(f"{path}: targets[0].service: unknown service 'bedrok-runtime'")
    assert "\n" not in error

    path.write_text(document(listen="127.0.0.1:1", regions=("r1", "r2")))
    assert exporter.reload() == "listen: changing the listen address (127.0.0.1:0 -> 127.0.0.1:1) needs a restart"
    path.write_text(document(cache="file", regions=("r1", "r2")))
    assert exporter.reload() == "cache: changing the cache needs a restart"
    assert exporter.resolved.targets[0].regions == ("r1", "r2")
    assert list(exporter.states["t"].regions) == ["r1", "r2"]


def two_targets(t_regions: tuple[str, ...], with_u: bool = True, ranking: dict[str, object] | None = None) -> str:
    def target(name: str, regions: tuple[str, ...]) -> dict[str, object]:
        return {"name": name, "service": "bedrock-runtime", "probe": "tcp", "regions": [],
                "endpoints": {r: "https://127.0.0.1:1" for r in regions}, "interval": "600s", "timeout": "1s"}

    targets = [target("t", t_regions)] + ([target("u", ("r1",))] if with_u else [])
    return yaml.safe_dump({"listen": "127.0.0.1:0", "cache": "none", "targets": targets, "ranking": ranking or {}})


def test_reload_drops_a_region_and_a_target_and_swaps_the_policy_only_when_ranking_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(two_targets(("r1", "r2"), ranking={"max_failures": 2}))
    exporter = Exporter(ConfigSource(path, {}, {}, isolated=False))
    try:
        state = exporter.states["t"]
        for region, latency in (("r1", 0.02), ("r2", 0.01)):
            for _ in range(3):
                state.record(region, ProbeResult(latency, {"connect": latency}))
        state.record("r2", ProbeResult.failure(ErrorKind.REFUSED, "refused"))
        assert state.snapshot().ranking.fastest == "r1"  # r2's failure hands #1 over at once
        policy = state.policy
        assert set(exporter.scheduler.due_times()) == {"t/r1", "t/r2", "u/r1"}

        # r2 and target u go; the ranking settings stay: the policy (its #1, its ejection memory) survives
        path.write_text(two_targets(("r1",), with_u=False, ranking={"max_failures": 2}))
        assert exporter.reload() is None
        assert set(exporter.states) == {"t"} and exporter.states["t"] is state
        assert state.policy is policy
        snapshot = state.snapshot()
        assert snapshot.regions == ("r1",)
        assert set(snapshot.tracker.regions) == {"r1"}
        assert set(snapshot.last_probe) == {"r1"} and set(snapshot.histograms) == {"r1"}
        assert set(snapshot.probes_total) == {"r1"} and not snapshot.failures_total
        assert [e.region for e in snapshot.ranking.entries] == ["r1"]
        assert set(exporter.scheduler.due_times()) == {"t/r1"}

        # new ranking settings: a new policy, built from them, ranks the kept state at once
        path.write_text(two_targets(("r1",), with_u=False, ranking={"max_failures": 2, "min_samples": 4}))
        generation = state.snapshot().generation
        assert exporter.reload() is None
        assert state.policy is not policy
        assert isinstance(state.policy, TrustedRanking) and state.policy.settings.min_samples == 4
        snapshot = state.snapshot()
        assert snapshot.generation > generation
        assert snapshot.ranking.ranked() == []  # r1 has 3 samples, fewer than the new minimum
        assert snapshot.tracker.regions["r1"].samples == 3  # the EMA state itself survives the swap
    finally:
        exporter.stop()
