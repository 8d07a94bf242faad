"""Headless Chromium (Debian's package) for checking pages as a person would see them."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class DevTools:
    """One headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: the browser
    reads commands on fd 3 and writes answers on fd 4, each a JSON message ended by NUL), one page (tab).

    For what --dump-dom cannot tell: the layout at a given width, request headers (basic auth), the HTTP status
    of a navigation. The page under test needs no script of its own for any of it.
    """

    def __init__(self, *, timeout: float = 60, extra_flags: tuple[str, ...] = ()) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (./test.sh installs it as root)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire() -> None:  # in the child: its fd 3 and fd 4 are the two pipe ends
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", *extra_flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=wire)  # noqa: PLW1509 - the dup2 must happen in the child
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=True)

    # -- protocol --------------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are kept in `events`)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"DevTools {method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self.events.append(answer)

    def wait_event(self, method: str, after: int = 0,
                   where: Callable[[dict[str, Any]], bool] = lambda _params: True) -> int:
        """The index in `events` of the first event `method` (whose params satisfy `where`) at or after index
        `after`, waiting for it if need be."""
        deadline = time.monotonic() + self.timeout
        while True:
            for index in range(after, len(self.events)):
                event = self.events[index]
                if event["method"] == method and where(event.get("params", {})):
                    return index
            answer = self._read(deadline)
            if "method" in answer:
                self.events.append(answer)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise AssertionError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium exited ({self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    # -- what tests ask --------------------------------------------------------------------------------

    def set_width(self, width: int, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)

    def set_headers(self, headers: dict[str, str]) -> None:
        self.call("Network.setExtraHTTPHeaders", {"headers": headers}, session=True)

    def open(self, url: str) -> int:
        """Navigate and wait for the load event; the HTTP status of the page's own response."""
        mark = len(self.events)
        frame = self.call("Page.navigate", {"url": url}, session=True)
        if frame.get("errorText"):
            raise AssertionError(f"chromium could not open {url}: {frame['errorText']}")
        # this navigation's document (not a late event of the one before), then the load event after it
        response = self.wait_event("Network.responseReceived", mark,
                                   lambda p: p.get("loaderId") == frame["loaderId"] and p.get("type") == "Document")
        self.wait_event("Page.loadEventFired", response + 1)
        status: int = self.events[response]["params"]["response"]["status"]
        return status

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools runs it; the page needs no script)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = True, max_height: int = 4000) -> Path:
        """A PNG of the page as laid out now (the whole page, up to `max_height` CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": min(height, max_height), "scale": 1})
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
