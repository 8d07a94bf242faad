"""The default cache: one JSON file, replaced atomically, readable by its owner only."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


class CacheError(Exception):
    """The cache could not be read or written; the message says which file and why."""


class FileCache:
    """A JSON object of key -> value in one file.

    Writes go to a temporary file in the same directory (mode 0600), are fsynced and then
    renamed over the old file, so a crash leaves either the old or the new document, never
    half of one. A file that cannot be parsed is moved aside to `<name>.corrupt-<epoch>`
    before it is replaced, so nothing it held is lost silently.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            return self._read().get(key)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            try:
                document = self._read()
            except CacheError:
                self._move_aside()
                document = {}
            document[key] = value
            self._write(document)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CacheError(f"cannot read cache file {self.path}: {exc.strerror or exc}") from None
        if not text.strip():
            return {}
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheError(f"cache file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise CacheError(f"cache file {self.path} does not hold a JSON object")
        return document

    def _write(self, document: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise CacheError(f"cannot write cache file {self.path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp creates it 0600
                json.dump(document, handle, separators=(",", ":"), allow_nan=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except (OSError, ValueError, TypeError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise CacheError(f"cannot write cache file {self.path}: {exc}") from None

    def _move_aside(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}"))
