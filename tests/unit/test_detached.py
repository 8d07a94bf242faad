"""Detached calls (getaddrinfo): reused daemon threads, never held back by a hung call."""

from __future__ import annotations

import threading
import time

import pytest

from region_latency.probes import _detached


def wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_a_finished_thread_takes_the_next_call() -> None:
    seen: list[int] = []
    done = threading.Event()

    def call() -> None:
        seen.append(threading.get_ident())
        done.set()

    for _ in range(5):
        done.clear()
        _detached.run_detached(call)
        assert done.wait(5)
        assert wait_for(lambda: _detached.idle_threads() >= 1)
    assert len(set(seen)) == 1  # one thread served all five, one after another


def test_a_hung_call_never_holds_back_the_next_one() -> None:
    release = threading.Event()
    answered = threading.Event()
    _detached.run_detached(lambda: release.wait(10) and None)
    wait_for(lambda: False, 0.05)
    try:
        _detached.run_detached(answered.set)
        assert answered.wait(5)
    finally:
        release.set()


def test_a_call_that_raises_leaves_its_thread_in_service() -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    _detached.run_detached(broken)
    answered = threading.Event()
    assert wait_for(lambda: _detached.idle_threads() >= 1)
    _detached.run_detached(answered.set)
    assert answered.wait(5)


def test_idle_threads_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_detached, "IDLE_SECONDS", 0.05)
    release = threading.Event()
    served: set[int] = set()

    def hold() -> None:
        served.add(threading.get_ident())
        release.wait(10)

    for _ in range(3):  # three at once: three threads
        _detached.run_detached(hold)
    assert wait_for(lambda: len(served) == 3)
    release.set()
    assert wait_for(lambda: not served & {t.ident for t in threading.enumerate()}, 10)  # all three ended
    answered = threading.Event()
    _detached.run_detached(answered.set)  # still served, by a thread left or a new one
    assert answered.wait(5)
