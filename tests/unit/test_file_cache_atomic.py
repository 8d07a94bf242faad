"""The file cache's write is atomic: a write that dies midway leaves the old document readable.

A child process writes a large document under a file-size limit (RLIMIT_FSIZE), so its write fails
part-way through, the way a full disk or a crash mid-write would stop it. Whatever the cache does
internally, the file at the cache's path must still hold the old document afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from region_latency.cache import FileCache

CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from region_latency.cache import FileCache

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    try:
        FileCache(sys.argv[1]).set("k", {"big": "x" * 1_000_000})
    except Exception as exc:
        print(type(exc).__name__, exc)
        sys.exit(3)
    sys.exit(0)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fails_midway_leaves_the_old_document(tmp_path: Path) -> None:
    path = tmp_path / "latencies.json"
    FileCache(path).set("k", {"old": [1, 2, 3]})
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert child.returncode == 3, child.stdout + child.stderr  # the write did fail part-way
    assert FileCache(path).get("k") == {"old": [1, 2, 3]}
    assert path.stat().st_size < 16384
