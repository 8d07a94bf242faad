"""`serve`'s configuration loads: validated here once, regions and endpoint URLs worked out in a child process.

Region lists and endpoint URLs come from botocore's data (region_latency.targets.place, through
region_latency.regions). Importing botocore and loading that data costs the process that does it ~15 MB of RSS for
good: dropping the session afterwards frees under 1 MB, the interpreter keeps the rest. `serve` only needs the
answers, so a child (`python -m region_latency.resolve`) runs that one step, `place`, and nothing else: this process
reads and validates the configuration (once), sends each target's placement fields, and builds the resolved targets
from the answers (`targets.resolve_targets(..., placements=...)`). The child starts first, so its imports overlap
this process's own. The serving process then imports botocore only when a target uses the `api` probe (boto3
itself, at probe time).

Protocol: one JSON request on the child's stdin, `{"targets": [{PLACEMENT_FIELDS...}, ...]}`; one JSON answer on
its stdout, `{"targets": [...]}` with one entry per target, in order: `{"regions": [...], "urls": {region: url}}`,
or `{"error": {"path": [field, ...], "problem": "..."}}` for the first target `place` refused (the list ends
there). The parent checks the targets before it, then raises the same one-line ConfigError an in-process
resolution gives.

If the child cannot run or answer (it crashed, timed out, or printed something else), the parent logs a warning and
resolves in-process: the configuration still loads the same, only the memory saving is lost.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from region_latency.targets import Placement, PlacementError, ResolvedConfig

# The config code (pydantic, the probe kinds) is imported after the child has started: the two import in parallel.

log = logging.getLogger(__name__)

CHILD_TIMEOUT = 120.0  # seconds; botocore's import and data load take about one
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding region_latency/


def load_config_isolated(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                         overrides: Mapping[str, object] | None = None) -> ResolvedConfig:
    """`targets.load_targets(path, env=env, overrides=overrides)`, with botocore's part done in a child process.

    Same result and the same one-line ConfigError as `load_targets`; this process never imports botocore.
    """
    return PendingConfig(path, env=env, overrides=overrides).result()


class PendingConfig:
    """A `load_config_isolated` in two halves: the constructor starts the child and reads the file, `result()`
    validates the configuration, has the child place its targets and raises every ConfigError (an unreadable file
    too). In between the caller can do its own imports while the child does its own (`serve` does)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, object] | None = None) -> None:
        # The child first: it imports botocore and loads its data while this process imports the config code.
        self._proc: subprocess.Popen[str] | None = None
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "region_latency.resolve"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot start a child process to resolve regions (%s); resolving here", exc)
        from region_latency.config import ConfigError, read_config

        self._env = os.environ if env is None else env
        self._error: ConfigError | None = None
        self._path, self._text = path, None
        try:
            self._path, self._text = read_config(path, env=self._env)
        except ConfigError as exc:  # raised by result(), so that the caller catches in one place
            self._error = exc
            self._stop_child()
        self._overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    def _stop_child(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None

    def result(self) -> ResolvedConfig:
        """The configuration and its resolved targets; ConfigError (one line) when it is invalid."""
        from region_latency.config import ConfigError, config_source, load_config
        from region_latency.targets import placement_request, resolve_targets

        if self._error is not None:
            raise self._error
        source = config_source(self._path, env=self._env)
        try:
            config = load_config(self._path, env=self._env, overrides=self._overrides, text=self._text)
        except ConfigError:
            self._stop_child()
            raise
        answer = self._answer({"targets": [placement_request(t) for t in config.targets]})
        if answer is None:
            return resolve_targets(config, source)
        return resolve_targets(config, source, placements=_placements(answer["targets"]))

    def _answer(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The child's answer, or None (logged) when there is none to use."""
        proc = self._proc
        if proc is None:
            return None
        try:
            stdout, stderr = proc.communicate(json.dumps(request), timeout=CHILD_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            self._stop_child()
            log.warning("resolving regions in a child process failed (%s); resolving here", exc)
            return None
        self._proc = None
        if stderr:
            sys.stderr.write(stderr)  # warnings botocore printed, as they would have here
        try:
            answer = json.loads(stdout) if proc.returncode == 0 else None
        except ValueError:
            answer = None
        if not _well_formed(answer, len(request["targets"])):
            last = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            log.warning("resolving regions in a child process failed (%s); resolving here", last)
            return None
        assert isinstance(answer, dict)
        return answer


def _well_formed(answer: object, count: int) -> bool:
    """One entry per target, each regions and URLs, or an error that ends the list early."""
    if not isinstance(answer, dict) or not isinstance(answer.get("targets"), list):
        return False
    targets = answer["targets"]
    for i, entry in enumerate(targets):
        if not isinstance(entry, dict):
            return False
        error = entry.get("error")
        if error is not None:
            return (i == len(targets) - 1 and isinstance(error, dict) and isinstance(error.get("path"), list)
                    and isinstance(error.get("problem"), str))
        if not (isinstance(entry.get("regions"), list) and isinstance(entry.get("urls"), dict)
                and all(isinstance(entry["urls"].get(r), str) for r in entry["regions"])):
            return False
    return len(targets) == count


def _placements(targets: Sequence[Mapping[str, Any]]) -> list[Placement | PlacementError]:
    from region_latency.targets import PlacementError

    out: list[Placement | PlacementError] = []
    for entry in targets:
        if "error" in entry:
            out.append(PlacementError(tuple(entry["error"]["path"]), entry["error"]["problem"]))
        else:
            out.append((tuple(entry["regions"]), dict(entry["urls"])))
    return out


def answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """The child's side: `place` every target (botocore's data); their regions and URLs, up to the first error."""
    from region_latency.targets import PlacementError, place

    placed: list[dict[str, Any]] = []
    for spec in request["targets"]:
        try:
            regions, urls = place(**spec)
        except PlacementError as exc:
            placed.append({"error": {"path": list(exc.path), "problem": exc.problem}})
            break
        placed.append({"regions": list(regions), "urls": dict(urls)})
    return {"targets": placed}


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed while working must not corrupt the answer
    from region_latency import regions

    regions.partitions()  # load botocore while the parent validates the configuration
    request = json.load(sys.stdin)
    out.write(json.dumps(answer(request)))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
