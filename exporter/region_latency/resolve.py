"""Load the configuration with its regions and endpoint URLs worked out in a short-lived child process.

Region lists and endpoint URLs come from botocore's data (region_latency.regions). Importing botocore and loading
that data costs the process that does it ~15 MB of RSS for good: dropping the session afterwards frees under 1 MB,
the interpreter keeps the rest. `serve` only needs the answers, so it asks a child (`python -m
region_latency.resolve`) to load the very same input, and validates it again itself with the child's answers
(`load_config(..., resolved=...)`), which skips every botocore lookup. The serving process then imports botocore
only when a target uses the `api` probe (boto3 itself, at probe time).

Protocol: one JSON request on the child's stdin `{"path", "text", "env", "overrides"}` (the file is read once, by
the parent, and its text handed over, so both sides see the same version of it); one JSON answer on its stdout,
either `{"targets": {name: {"regions": [...], "urls": {region: url}}}}` or `{"error": {"source", "field",
"problem"}}` (a ConfigError, re-raised with the same one-line message by the parent).

If the child cannot run or answer (it crashed, timed out, or printed something else), the parent logs a warning and
resolves in-process, as before: the configuration still loads the same, only the memory saving is lost.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from region_latency.config import Config

log = logging.getLogger(__name__)

CHILD_TIMEOUT = 120.0  # seconds; botocore's import and data load take about one
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding region_latency/


def load_config_isolated(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                         overrides: Mapping[str, object] | None = None) -> Config:
    """`load_config(path, env=env, overrides=overrides)`, with botocore's part done in a child process.

    Same result and the same one-line ConfigError as `load_config`; this process never imports botocore.
    """
    return PendingConfig(path, env=env, overrides=overrides).result()


class PendingConfig:
    """A `load_config_isolated` in two halves: the constructor starts the child and reads the file, `result()`
    waits for the child and raises every ConfigError (an unreadable file too). In between the caller can do its
    own imports while the child does its own (`serve` does: the child then delays the start less)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, object] | None = None) -> None:
        # The child first: it imports pydantic and botocore while this process imports the config code.
        self._proc: subprocess.Popen[str] | None = None
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "region_latency.resolve"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot start a child process to resolve regions (%s); resolving here", exc)
        from region_latency.config import ENV_PREFIX, ConfigError, read_config

        self._env = os.environ if env is None else env
        self._error: ConfigError | None = None
        self._path, self._text = path, None
        try:
            self._path, self._text = read_config(path, env=self._env)
        except ConfigError as exc:  # raised by result(), so that the caller catches in one place
            self._error = exc
            self._stop_child()
        self._overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self._request = json.dumps({
            "path": None if self._path is None else os.fspath(self._path),
            "text": self._text,
            "env": {k: v for k, v in self._env.items() if k.startswith(ENV_PREFIX)},
            "overrides": self._overrides,
        })

    def _stop_child(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None

    def result(self) -> Config:
        """The configuration; ConfigError (one line) when it is invalid."""
        from region_latency.config import ConfigError, load_config

        if self._error is not None:
            raise self._error
        answer = self._answer()
        if answer is None:
            return load_config(self._path, env=self._env, overrides=self._overrides, text=self._text)
        if "error" in answer:
            error = answer["error"]
            raise ConfigError(str(error["source"]), str(error["field"]), str(error["problem"]))
        return load_config(self._path, env=self._env, overrides=self._overrides, text=self._text,
                           resolved=answer["targets"])

    def _answer(self) -> dict[str, Any] | None:
        """The child's answer, or None (logged) when there is none to use."""
        proc = self._proc
        if proc is None:
            return None
        try:
            stdout, stderr = proc.communicate(self._request, timeout=CHILD_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            self._stop_child()
            log.warning("resolving regions in a child process failed (%s); resolving here", exc)
            return None
        if stderr:
            sys.stderr.write(stderr)  # warnings botocore or the config code printed, as they would have here
        try:
            answer = json.loads(stdout) if proc.returncode == 0 else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not (isinstance(answer.get("targets"), dict) or
                                                isinstance(answer.get("error"), dict)):
            last = (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            log.warning("resolving regions in a child process failed (%s); resolving here", last)
            return None
        return answer


def answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """The child's side: load the configuration in full (botocore included) and return what the parent needs."""
    from region_latency.config import ConfigError, load_config

    try:
        config = load_config(request["path"], env=request["env"], overrides=request["overrides"],
                             text=request["text"])
    except ConfigError as exc:
        return {"error": {"source": exc.source, "field": exc.field, "problem": exc.problem}}
    return {"targets": {t.name: {"regions": list(t.region_names), "urls": {r: t.endpoint_for(r) for r in
                                                                            t.region_names}}
                        for t in config.targets}}


def main() -> int:
    request = json.load(sys.stdin)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed while loading must not corrupt the answer
    out.write(json.dumps(answer(request)))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
