"""The default cache: one JSON file, replaced atomically, readable by its owner only, never lost silently."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from region_latency.cache.base import CacheError
from region_latency.cache.codec import MAX_DOCUMENT_BYTES, CorruptDataError, dumps, loads

KEEP_CORRUPT = 5
"""Copies of unloadable files kept beside the cache (`<name>.corrupt-<epoch>`); older ones are deleted."""

log = logging.getLogger(__name__)


class FileCache:
    """A JSON object of key -> value in one file.

    Writes go to a temporary file in the same directory (mode 0600), are fsynced, renamed over the old
    file and the directory is fsynced, so a crash leaves either the old or the new document, never half
    of one. Temporary files left by a crash are removed when the cache is opened. Whatever cannot be
    loaded (not JSON, not UTF-8, too large or too deep, numbers JSON cannot carry, a key whose value the
    tracker had to repair) is first kept as `<name>.corrupt-<epoch>` (a hard link or a copy, mode 0600;
    the newest `keep_corrupt` are kept), and only then overwritten.
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_corrupt: int = KEEP_CORRUPT) -> None:
        self.path = Path(path).expanduser()
        self.keep_corrupt = max(1, keep_corrupt)
        self._lock = threading.Lock()
        self._kept: tuple[int, int, int, int] | None = None  # identity of the file version last kept aside
        self._kept_as: Path | None = None
        self.orphans_removed = self._remove_orphans()

    def get(self, key: str) -> Any:
        with self._lock:
            try:
                document, _flaw = self._load()
            except CorruptDataError as exc:
                kept = self._keep_aside()
                raise CacheError(f"cache file {self.path} {exc}; kept a copy as {kept}") from None
            return document.get(key)

    def set(self, key: str, value: Any) -> None:
        payload = dumps(value)  # a value that cannot be written fails here, before anything is touched
        with self._lock:
            try:
                document, flaw = self._load()
            except CorruptDataError as exc:
                self._keep_aside_logged(str(exc))
                document, flaw = {}, None
            except CacheError as exc:  # unreadable (permissions, I/O): keep it, if that works, and replace it
                self._keep_aside_logged(f"cannot be read ({exc})")
                document, flaw = {}, None
            if flaw is not None:
                self._keep_aside_logged(flaw)
            parts: list[str] = []
            for other, held in document.items():
                if other == key:
                    continue
                try:
                    parts.append(f"{json.dumps(other)}:{dumps(held)}")
                except CacheError as exc:  # only in a flawed file, which was just kept aside
                    log.warning("cache file %s: dropped key %r, which cannot be written back (%s)",
                                self.path, other, exc)
            parts.append(f"{json.dumps(key)}:{payload}")
            text = "{" + ",".join(parts) + "}"
            if len(text) > MAX_DOCUMENT_BYTES:
                raise CacheError(f"cannot write cache file {self.path}: it would be larger than "
                                 f"{MAX_DOCUMENT_BYTES} bytes")
            self._write(text)

    def preserve_aside(self, key: str, reason: str) -> str | None:
        """Keep a copy of the file as it is now, because the value under `key` had to be repaired."""
        with self._lock:
            kept = self._keep_aside()
        if kept is not None:
            log.warning("cache file %s: key %r %s; kept a copy as %s", self.path, key, reason, kept)
        return None if kept is None else str(kept)

    # -- reading --------------------------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, Any], str | None]:
        """The file's object and its flaw; CorruptDataError for content that cannot load, CacheError for I/O."""
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_DOCUMENT_BYTES:
                    raise CorruptDataError(f"is larger than {MAX_DOCUMENT_BYTES} bytes ({size} bytes)")
                raw = handle.read(MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise CacheError(f"cannot read cache file {self.path}: {exc.strerror or exc}") from None
        if not raw.strip():
            return {}, None
        decoded = loads(raw)
        if not isinstance(decoded.value, dict):
            raise CorruptDataError(f"does not hold a JSON object (it holds a {type(decoded.value).__name__})")
        return decoded.value, decoded.flaw

    # -- keeping what cannot be loaded ----------------------------------------------------------------

    def _keep_aside_logged(self, reason: str) -> None:
        already = self._kept_as
        kept = self._keep_aside()
        if kept is not None and kept != already:
            log.warning("cache file %s %s; kept a copy as %s before replacing it", self.path, reason, kept)

    def _keep_aside(self) -> Path | None:
        """Link (or copy) the file to `<name>.corrupt-<epoch>` once per version of it; CacheError if impossible."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"cannot keep a copy of cache file {self.path}: {exc.strerror or exc}; "
                             "not overwriting it") from None
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._kept and self._kept_as is not None and self._kept_as.exists():
            return self._kept_as
        copies = self._copies()
        if copies:  # an earlier process (a restart) may have kept this very file: it is a link to it
            newest = self.path.with_name(copies[-1][2])
            with contextlib.suppress(OSError):
                if os.path.samefile(newest, self.path):
                    self._kept, self._kept_as = identity, newest
                    return newest
        try:
            aside = self._link_or_copy()
        except OSError as exc:
            raise CacheError(f"cannot keep a copy of cache file {self.path}: {exc.strerror or exc}; "
                             "not overwriting it") from None
        self._kept, self._kept_as = identity, aside
        self._fsync_dir()
        self._prune()
        return aside

    def _link_or_copy(self) -> Path:
        stamp = int(time.time())
        taken = [n for s, n, _ in self._copies() if s == stamp]
        first = max(taken) + 1 if taken else 0  # later copies sort after earlier ones, within one second too
        for attempt in range(first, first + 1000):
            suffix = f".corrupt-{stamp}" + (f".{attempt}" if attempt else "")
            aside = self.path.with_name(self.path.name + suffix)
            try:
                os.link(self.path, aside)
            except FileExistsError:
                continue
            except OSError:  # no hard links here (or not allowed): copy the bytes
                with open(self.path, "rb") as source:
                    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as target:
                        while chunk := source.read(1 << 20):
                            target.write(chunk)
                        target.flush()
                        os.fsync(target.fileno())
                return aside
            os.chmod(aside, 0o600)  # the same inode as the file about to be replaced
            return aside
        raise FileExistsError(f"too many copies named {self.path.name}.corrupt-{stamp}.*")

    def _copies(self) -> list[tuple[int, int, str]]:
        """The copies beside the file as (epoch, sequence, name), oldest first."""
        pattern = re.compile(re.escape(self.path.name) + r"\.corrupt-(\d+)(?:\.(\d+))?")
        copies: list[tuple[int, int, str]] = []
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path.parent):
                match = pattern.fullmatch(name)
                if match:
                    copies.append((int(match[1]), int(match[2] or 0), name))
        return sorted(copies)

    def _prune(self) -> None:
        copies = self._copies()
        for _, _, name in copies[: max(0, len(copies) - self.keep_corrupt)]:
            with contextlib.suppress(OSError):
                os.unlink(self.path.parent / name)

    # -- writing --------------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise CacheError(f"cannot write cache file {self.path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise CacheError(f"cannot write cache file {self.path}: {exc.strerror or exc}") from None
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        """Make the rename (or the new link) itself durable."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _remove_orphans(self) -> int:
        """Delete `.<name>.*.tmp` files that a crash (kill -9, power loss) left between write and rename."""
        prefix = f".{self.path.name}."
        removed = 0
        with contextlib.suppress(OSError), os.scandir(self.path.parent) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp") \
                        and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.info("cache file %s: removed %d temporary file(s) left by an earlier crash", self.path, removed)
        return removed
