"""Stopping child processes: for every process the simulator, the tests and the benchmarks start."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM (unless it already exited), wait up to `timeout` seconds, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
