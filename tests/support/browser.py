"""Headless Chromium (Debian's package) for checking pages as a person would see them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (./test.sh installs it as root)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, timeout: float = 60) -> str:
    """The page's DOM after Chromium loaded and rendered it."""
    result = _run(["--dump-dom", url], timeout)
    if result.returncode != 0:
        raise AssertionError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, path: Path, size: str = "1200,900", timeout: float = 60) -> Path:
    result = _run([f"--screenshot={path}", f"--window-size={size}", url], timeout)
    if result.returncode != 0 or not path.exists():
        raise AssertionError(f"chromium screenshot failed ({result.returncode}): {result.stderr[-2000:]}")
    return path
