"""Stopping the real servers the integration tests start."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (unless it already exited), wait up to `timeout` seconds, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
