"""Reloads: one at a time, at most one per interval, on their own thread; /-/reload gated by --web.enable-lifecycle."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from region_latency.export.prometheus import build_registry
from region_latency.export.routes import ExporterApp, WebHooks
from region_latency.export.server import Request, Response
from region_latency.lifecycle import Reloader


class SlowReload:
    """A reload that blocks until released, counting how many ran and how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.runs = 0
        self.running = 0
        self.most_at_once = 0
        self.threads: set[str] = set()
        self.fail = False

    def __call__(self) -> str | None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.runs += 1
        self.threads.add(threading.current_thread().name)
        self.started.release()
        self.release.wait(10)
        self.running -= 1
        return "bad config" if self.fail else None


def test_requests_during_a_reload_share_the_next_one_and_reloads_never_overlap() -> None:
    reload = SlowReload()
    reloader = Reloader(reload, min_interval=0.0)
    first = reloader.request()
    assert reload.started.acquire(timeout=5)  # the first is running
    waiting = [reloader.request() for _ in range(100)]  # a flood while it runs
    assert len({id(f) for f in waiting}) == 1 and waiting[0] is not first  # one shared Future: the next reload
    reload.release.set()
    assert first.result(5) is None and waiting[0].result(5) is None
    assert reload.runs == 2 and reload.most_at_once == 1  # 101 requests, 2 reloads, never two at once
    assert reload.threads == {"reload"}  # never the caller's thread (nor the web server's workers)
    reloader.stop()


def test_at_most_one_reload_per_interval() -> None:
    now = [100.0]
    reload = SlowReload()
    reload.release.set()
    reloader = Reloader(reload, min_interval=3600.0, clock=lambda: now[0])
    assert reloader.request().result(5) is None
    second = reloader.request()
    time.sleep(0.2)
    assert not second.done() and reload.runs == 1  # within the interval: waits, does not run
    now[0] += 3600.0
    with reloader._lock:  # wake the thread as a new request would
        reloader._wake.notify()
    assert second.result(5) is None and reload.runs == 2
    reloader.stop()


def test_status_tracks_the_last_outcome() -> None:
    reload = SlowReload()
    reload.release.set()
    wall = [1000.0]
    reloader = Reloader(reload, min_interval=0.0, wall_clock=lambda: wall[0])
    assert reloader.status.last_successful and reloader.status.last_success_at == 1000.0  # the start counts
    wall[0] = 2000.0
    assert reloader.request().result(5) is None
    assert reloader.status.last_success_at == 2000.0
    reload.fail = True
    wall[0] = 3000.0
    assert reloader.request().result(5) == "bad config"
    assert not reloader.status.last_successful and reloader.status.last_success_at == 2000.0
    reloader.stop()
    assert reloader.request().result(1) == "the exporter is shutting down"


def _app(lifecycle: bool, reload: Future[str | None]) -> ExporterApp:
    hooks = WebHooks(snapshots=list, ready=lambda: True, reload=lambda: reload)
    return ExporterApp(build_registry(list), hooks, lifecycle=lifecycle, metrics_path="/probe-metrics")


def _answer(app: ExporterApp, method: str, path: str) -> Response:
    request = Request(method, path, "", {})
    answer = app.respond_now(request)
    if answer is None:
        answer = app.respond(request)
    return answer.result(5) if isinstance(answer, Future) else answer


def test_reload_over_http_is_refused_unless_lifecycle_is_enabled() -> None:
    done: Future[str | None] = Future()
    done.set_result(None)
    off = _app(False, done)
    for method in ("POST", "PUT"):
        answer = _answer(off, method, "/-/reload")
        assert (answer.status, answer.body) == (403, b"Lifecycle API is not enabled.\n")
    assert _answer(off, "GET", "/-/reload").status == 405
    on = _app(True, done)
    assert _answer(on, "POST", "/-/reload").body == b"Reloaded.\n"
    failed: Future[str | None] = Future()
    failed.set_result("targets[0]: nope")
    answer = _answer(_app(True, failed), "PUT", "/-/reload")
    assert (answer.status, answer.body) == (500, b"reload failed: targets[0]: nope\n")


def test_the_telemetry_path_moves_metrics() -> None:
    done: Future[str | None] = Future()
    app = _app(False, done)
    assert _answer(app, "GET", "/probe-metrics").status == 200
    assert _answer(app, "GET", "/metrics").status == 404
