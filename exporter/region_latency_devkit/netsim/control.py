"""JSON lines between the simulator and its worker processes (delay line, servers).

The workers are separate processes (`python -m region_latency_devkit.netsim.worker KIND`) so that their timing never
waits for the caller's GIL. Each reads one config line, answers `{"ready": ...}` or `{"error": ...}`, then
serves requests (`{"op": ...}` -> one answer line) until `stop` or the end of its stdin.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import region_latency_devkit
from region_latency_devkit.process import stop_process


class WorkerError(RuntimeError):
    """A worker failed to start, answered with an error, or died."""


class LineChannel:
    """Newline-delimited JSON over a pair of raw fds (never Python's buffered streams, so select() is honest)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buf = b""
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[os.write(self.write_fd, data):]

    def _pop_line(self) -> dict[str, Any] | None:
        line, sep, rest = self._buf.partition(b"\n")
        if not sep:
            return None
        self._buf = rest
        message: dict[str, Any] = json.loads(line)
        return message

    def read_available(self) -> list[dict[str, Any]]:
        """Everything complete that can be read now without blocking (the fd must be readable or non-blocking)."""
        chunk = os.read(self.read_fd, 65536)
        if not chunk:
            self.closed = True
        self._buf += chunk
        messages = []
        while (message := self._pop_line()) is not None:
            messages.append(message)
        return messages

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """Block for the next message; WorkerError on timeout or end of stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (message := self._pop_line()) is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.read_fd], [], [], remaining)[0]:
                raise WorkerError(f"no answer within {timeout} s")
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                self.closed = True
                raise WorkerError("worker closed its output (it died; see its stderr)")
            self._buf += chunk
        return message


class WorkerProcess:
    """The simulator's handle on one worker process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: LineChannel | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, config: dict[str, Any]) -> None:
        """Launch the worker and hand it CONFIG; `wait_ready` collects its answer (so several start in parallel)."""
        package_root = str(Path(region_latency_devkit.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "region_latency_devkit.netsim.worker", self.kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._channel = LineChannel(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        self._channel.send(config)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self._channel is not None
        answer = self._channel.receive(timeout)
        if "error" in answer:
            raise WorkerError(f"{self.kind} worker: {answer['error']}")
        return answer

    def request(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one request and wait for its answer (one at a time: the lock keeps pairs together)."""
        with self._lock:
            if self._channel is None or self._channel.closed:
                raise WorkerError(f"{self.kind} worker is not running")
            try:
                self._channel.send(message)
            except BrokenPipeError as e:
                raise WorkerError(f"{self.kind} worker died") from e
            answer = self._channel.receive(timeout)
        if "error" in answer:
            raise WorkerError(f"{self.kind} worker: {answer['error']}")
        return answer

    def stop(self, timeout: float = 3.0) -> None:
        """Ask politely, then SIGTERM, then SIGKILL; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                with self._lock:
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"op":"stop"}\n')
                    proc.stdin.flush()
                    proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_process(proc, timeout)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._channel = None
        self._proc = None
