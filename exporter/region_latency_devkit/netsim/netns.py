"""Network namespaces: create, delete, clean up leftovers, and enter one in the current thread.

Python 3.11 has no `os.setns`, so entering goes through libc's `setns()` via ctypes. A network namespace is a
per-thread property: entering one changes only the calling thread, and every socket (or TUN device) that thread
opens stays in that namespace for its whole life, even after the thread goes back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
PREFIX = "rlsim"
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-[cr]$")
_counter = 0
_counter_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace could not be created, entered or configured."""


def ip_binary() -> str:
    """Where iproute2's `ip` is (root's PATH may lack /usr/sbin under some runners)."""
    for candidate in (shutil.which("ip"), "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NetnsError("iproute2 `ip` not found")


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n NETNS] ARGS...`; raises NetnsError with ip's message when it fails and `check` is set."""
    cmd = [ip_binary(), *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def ip_batch(commands: Iterable[str], netns: str | None = None) -> None:
    """Run many `ip` commands in one process (`ip -batch -`): 35 regions need ~70 of them."""
    text = "\n".join(commands) + "\n"
    cmd = [ip_binary(), *(["-n", netns] if netns else []), "-batch", "-"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")


def new_names(pid: int | None = None) -> tuple[str, str]:
    """Unique (client, regions) namespace names for one simulator: `rlsim-<pid>-<n>-c` / `-r`.

    The pid lets `cleanup_leftovers` tell a crashed simulator's namespaces from a live parallel run's.
    """
    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    base = f"{PREFIX}-{pid or os.getpid()}-{n}"
    return f"{base}-c", f"{base}-r"


def list_names() -> list[str]:
    """Names of all named network namespaces (the files under /run/netns)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """`ip netns add NAME`, loopback up, IPv6 off by default (so devices made later start without it)."""
    ip("netns", "add", name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        with entered(name):
            for key in ("default", "all"):
                write_sysctl(f"net/ipv6/conf/{key}/disable_ipv6", "1")
    except BaseException:
        delete(name)
        raise


def delete(name: str) -> None:
    """`ip netns del NAME`; a namespace that is already gone is fine."""
    if exists(name):
        ip("netns", "del", name, check=False)


def write_sysctl(key: str, value: str) -> bool:
    """Write /proc/sys/KEY as seen by the calling thread's namespace; False if the key does not exist."""
    try:
        Path("/proc/sys", key).write_text(value)
    except FileNotFoundError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Delete simulator namespaces whose creating process is gone (a crash or SIGKILL skips teardown)."""
    removed = []
    for name in list_names():
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            delete(name)
            removed.append(name)
    return removed


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Put the calling thread into namespace NAME for the block, then back where it was.

    Sockets and TUN devices opened inside the block belong to NAME for good.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def enter(name: str) -> None:
    """Move the calling thread into namespace NAME for good (a worker thread's initializer).

    Threads it starts later are born in NAME too.
    """
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NetnsError(f"no network namespace {name!r}") from e
    try:
        _setns(target)
    finally:
        os.close(target)


def call_in(name: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run fn(*args, **kwargs) on a fresh thread inside namespace NAME and return its result (or raise its error).

    The caller's own thread never changes namespace, which keeps unrelated code (loggers, exporters) in its own.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with entered(name):
                result.append(fn(*args, **kwargs))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def availability() -> tuple[bool, str]:
    """Whether this process can build namespaces and TUN devices; when not, the reason (for the fallback log)."""
    if os.geteuid() != 0:
        return False, "not root"
    if not os.path.exists("/dev/net/tun"):
        return False, "/dev/net/tun is missing"
    try:
        ip_binary()
    except NetnsError as e:
        return False, str(e)
    probe = new_names()[0]
    try:
        ip("netns", "add", probe)
    except NetnsError as e:
        return False, f"`ip netns add` is not permitted ({e})"
    delete(probe)
    return True, ""
