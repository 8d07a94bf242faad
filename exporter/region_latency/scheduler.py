"""When probes run: every job once per interval, with jitter, bounded concurrency and no self-overlap.

One scheduler thread keeps a heap of due times and hands due jobs to a thread pool. A slow or dead
region only occupies its own worker (each probe honours its timeout); a job whose previous run is
still in flight is skipped for that round and counted, never run twice at once.

New jobs run at once (the first sweep: readiness), then each on a slot of its own, the slots of the jobs
added together spread evenly over their interval: 1,000 pairs every 15 s start ~67 probes a second, not
1,000 in a burst every 15 s. Nothing here logs per probe: a job that keeps overrunning its interval is
logged when it starts to, and a probe that raises once per job and kind of exception.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from region_latency.probes.base import ErrorKind, ProbeFn, ProbeResult, Target

log = logging.getLogger(__name__)

TICK_INTERVAL = 1.0  # seconds between on_tick calls (clock-driven re-ranking: staleness)
DEFAULT_JITTER = 0.1  # each run lands up to ±10 % of the interval off its slot, spreading load


@dataclass(frozen=True, slots=True)
class Job:
    """Probe `target` with `probe` every `interval` seconds; results go to `on_result`."""

    key: str  # unique, e.g. "<target name>/<region>"
    target: Target
    probe: ProbeFn
    interval: float
    timeout: float
    on_result: Callable[[Target, ProbeResult], None]


_raised: set[tuple[str, str, str, type[BaseException]]] = set()  # (service, region, url, exception type) logged


def run_probe(probe: ProbeFn, target: Target, timeout: float) -> ProbeResult:
    """Run one probe; a probe that raises (a bug) becomes an `other` failure, not a dead worker (its traceback is
    logged once per target and exception type, not once per probe)."""
    try:
        return probe(target, timeout)
    except Exception as exc:
        key = (target.service, target.region, target.url, type(exc))
        if key not in _raised:
            _raised.add(key)
            log.exception("probe of %s %s raised (logged once per target and exception type)", target.service,
                          target.region)
        return ProbeResult.failure(ErrorKind.OTHER, f"probe raised {type(exc).__name__}: {exc}")


def run_sweep(jobs: Sequence[Job], concurrency: int) -> list[ProbeResult]:
    """Probe every job once, at most `concurrency` at a time; results in job order (CLI, benchmarks)."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs))), thread_name_prefix="sweep") as pool:
        futures = [pool.submit(_run_and_deliver, job) for job in jobs]
        return [future.result() for future in futures]


def _run_and_deliver(job: Job) -> ProbeResult:
    result = run_probe(job.probe, job.target, job.timeout)
    try:
        job.on_result(job.target, result)
    except Exception:
        log.exception("recording the result of %s failed", job.key)
    return result


@dataclass(slots=True)
class _Slot:
    due: float
    seq: int
    job: Job
    generation: int
    nominal: float  # the un-jittered slot; jitter never accumulates


# Heap entries: (due, seq, slot), compared as tuples in C (a dataclass's generated __lt__ costs ~20 Python calls
# per push and pop with 1,000 jobs).
_Entry = tuple[float, int, _Slot]
# Seconds the scheduler thread sleeps at least between rounds: due jobs start in small batches (at 1,000 pairs
# every 15 s, ~17 every quarter second) instead of one thread wake-up per probe, which costs ~40 % less CPU
# (bench/BENCHMARKS.md, scale) for a start up to this late, well inside the slot's jitter (10 % of the interval).
DISPATCH_GRANULARITY = 0.25


class Scheduler:
    """Runs jobs forever (until `stop`), each once per interval, at most `concurrency` at once."""

    def __init__(
        self,
        concurrency: int = 64,
        *,
        jitter: float = DEFAULT_JITTER,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_tick: Callable[[], None] | None = None,
        thread_initializer: Callable[[], None] | None = None,
    ) -> None:
        """`thread_initializer` runs once in every probe worker thread (e.g. to enter a network namespace)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.jitter = jitter
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_tick = on_tick
        self._next_tick = 0.0  # clock time of the next on_tick call: at most one a second
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="probe",
                                        initializer=thread_initializer)
        self._heap: list[_Entry] = []
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Future[ProbeResult]] = {}
        self._completed: set[str] = set()
        self._skipped: dict[str, int] = {}
        self._overrunning: set[str] = set()  # jobs whose latest round was skipped (logged once per episode)
        self._generation = 0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- configuration ---------------------------------------------------------------------------

    def set_jobs(self, jobs: Iterable[Job]) -> None:
        """Replace the job set (start-up and reload). New jobs run at once; kept jobs keep their slot."""
        jobs = list(jobs)
        with self._cond:
            old = self._jobs
            self._jobs = {job.key: job for job in jobs}
            self._generation += 1
            now = self._clock()
            kept = {slot.job.key: slot for _, _, slot in self._heap if slot.job.key in self._jobs}
            self._heap = []
            fresh = [job for job in jobs if not (job.key in old and job.key in kept
                                                 and old[job.key].interval == job.interval)]
            place = {job.key: (i + 0.5) / len(fresh) for i, job in enumerate(fresh)}  # in (0, 1), centred
            for job in jobs:
                slot = kept.get(job.key)
                if job.key not in place and slot is not None:
                    due, nominal = slot.due, slot.nominal
                else:
                    # Run now (within a second), then from a slot of its own: its second run lands half an
                    # interval to one and a half after the first, by its place among the new jobs (a job added
                    # alone: one interval after).
                    due = now + self._rng.uniform(0, min(job.interval * self.jitter, 1.0))
                    nominal = due + job.interval * (place[job.key] - 0.5)
                self._push(_Slot(due, next(self._seq), job, self._generation, nominal))
            self._completed &= set(self._jobs)
            self._cond.notify_all()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop scheduling and wait for in-flight probes (each bounded by its own timeout).

        Returns False when some probe was still running after `timeout` seconds.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            running = list(self._running.values())
        if self._thread is not None:
            self._thread.join()
        _, not_done = wait(running, timeout=timeout)
        self._pool.shutdown(wait=not not_done, cancel_futures=True)
        return not not_done

    # -- status ----------------------------------------------------------------------------------

    def sweep_done(self) -> bool:
        """True once every current job has completed at least one run."""
        with self._cond:
            return bool(self._jobs) and self._completed >= set(self._jobs)

    def skipped(self) -> dict[str, int]:
        """Runs skipped because the job's previous run was still in flight, per job key."""
        with self._cond:
            return dict(self._skipped)

    # -- internals -------------------------------------------------------------------------------

    def in_flight(self) -> set[str]:
        """Keys of the jobs whose probe is running now."""
        with self._cond:
            return set(self._running)

    def due_times(self) -> dict[str, float]:
        """Each job's next due time on the scheduler's clock (status, tests)."""
        with self._cond:
            return {slot.job.key: slot.due for _, _, slot in self._heap if slot.generation == self._generation}

    def run_pending(self) -> float | None:
        """Start every job due by the clock now; the clock time the next one is due (None: no jobs).

        The scheduler thread calls this in a loop; tests call it directly with an injected clock.
        """
        with self._cond:
            if self._stopping:
                return None
            now = self._clock()
            heap = self._heap
            while heap and heap[0][0] <= now:
                self._dispatch(heapq.heappop(heap)[2], now)
            return heap[0][0] if heap else None

    def _push(self, slot: _Slot) -> None:
        heapq.heappush(self._heap, (slot.due, slot.seq, slot))

    def _loop(self) -> None:
        while True:
            next_due = self.run_pending()
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                if next_due is None or next_due > now:
                    # at least DISPATCH_GRANULARITY: one wake-up starts the jobs due by then together
                    wait = 1.0 if next_due is None else min(max(next_due - now, DISPATCH_GRANULARITY), 1.0)
                    self._cond.wait(timeout=wait)
            if self._on_tick is not None and self._clock() >= self._next_tick:
                self._next_tick = self._clock() + TICK_INTERVAL
                try:
                    self._on_tick()
                except Exception:
                    log.exception("scheduler tick hook failed")

    def _dispatch(self, slot: _Slot, now: float) -> None:
        """Start `slot`'s job unless it is still running; queue its next slot either way."""
        job = slot.job
        if slot.generation != self._generation or self._jobs.get(job.key) is not job:
            return  # replaced by a reload
        if job.key in self._running:
            self._skipped[job.key] = self._skipped.get(job.key, 0) + 1
            if job.key not in self._overrunning:
                self._overrunning.add(job.key)
                log.warning("%s: previous probe still running, skipping this round (logged once until a round "
                            "runs again; the count per job is in the scheduler's skipped())", job.key)
        else:
            self._overrunning.discard(job.key)
            future = self._pool.submit(_run_and_deliver, job)
            self._running[job.key] = future
            future.add_done_callback(functools.partial(self._finished_future, job.key))
        nominal = slot.nominal + job.interval
        if nominal < now:  # fell behind (a stalled process): restart the cadence instead of bursting
            nominal = now + job.interval
        next_due = nominal + self._rng.uniform(-self.jitter, self.jitter) * job.interval
        self._push(_Slot(next_due, next(self._seq), job, slot.generation, nominal))

    def _finished_future(self, key: str, _future: Future[ProbeResult]) -> None:
        self._finished(key)

    def _finished(self, key: str) -> None:
        with self._cond:
            self._running.pop(key, None)
            if key in self._jobs:
                self._completed.add(key)
