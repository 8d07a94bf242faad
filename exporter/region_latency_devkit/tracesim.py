"""Replay synthetic latency traces through a real tracker on a virtual clock, to judge ranking policies.

Each region has a trace: its true latency over time (piecewise constant), per-sample noise, spikes,
transient probe losses and outages. The simulator probes every region once per interval with the
scheduler's jitter, feeds a real `RegionLatencyTracker` (virtual clock injected) with the results,
evaluates every policy after each result and on a clock tick (as TargetState and the scheduler do),
and records each policy's published #1 over time. Metrics compare that #1 with the ground truth of
the trace (the true latency, not the EMA). Everything is seeded: the same seed gives the same numbers.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from region_latency.ranking import PlainRanking, RankingPolicy, TrustedRanking
from region_latency.tracker import RegionLatencyTracker, TrackerSnapshot

SCHEDULER_JITTER = 0.1  # as region_latency.scheduler.DEFAULT_JITTER: each run up to ±10 % of the interval off


@dataclass(frozen=True, slots=True)
class Outage:
    """A region is down in [start, end): its probes fail after the timeout, or (silent) return nothing at all."""

    start: float
    end: float
    silent: bool = False


@dataclass(frozen=True, slots=True)
class RegionTrace:
    """One region's ground truth and how its samples scatter around it."""

    levels: tuple[tuple[float, float], ...]  # (from second, true latency in seconds), sorted, first from 0
    jitter: float = 0.05  # standard deviation of the log-normal noise of one sample (relative)
    spike_rate: float = 0.0  # probability that a sample is a spike
    spike_factor: float = 4.0  # a spike multiplies the sample by this
    loss: float = 0.0  # probability that a probe fails although the region is up
    outages: tuple[Outage, ...] = ()

    def latency_at(self, t: float) -> float:
        """The true latency at `t` (what the region would answer in without noise)."""
        starts = [start for start, _ in self.levels]
        return self.levels[max(0, bisect.bisect_right(starts, t) - 1)][1]

    def outage_at(self, t: float) -> Outage | None:
        return next((o for o in self.outages if o.start <= t < o.end), None)

    def change_points(self) -> list[float]:
        return [start for start, _ in self.levels] + [x for o in self.outages for x in (o.start, o.end)]


@dataclass(frozen=True, slots=True)
class Event:
    """A moment whose reaction time is measured.

    `leave`: seconds until `region` is no longer the published #1 (a death). `follow`: seconds until the
    published #1 is truly fastest again (a step change, a recovery). None when it did not happen before `until`.
    """

    at: float
    kind: Literal["leave", "follow"]
    label: str
    region: str
    until: float


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    about: str
    traces: Mapping[str, RegionTrace]
    duration: float
    interval: float = 30.0
    timeout: float = 5.0
    events: tuple[Event, ...] = ()

    def truly_fastest(self, t: float) -> frozenset[str]:
        """The regions that are up and have the lowest true latency at `t` (ties: all of them)."""
        up = {r: tr.latency_at(t) for r, tr in self.traces.items() if tr.outage_at(t) is None}
        if not up:
            return frozenset()
        best = min(up.values())
        return frozenset(r for r, latency in up.items() if latency == best)


@dataclass(slots=True)
class Timeline:
    """When the published #1 changed: parallel lists of times and regions (None = nothing ranked)."""

    times: list[float] = field(default_factory=list)
    fastest: list[str | None] = field(default_factory=list)

    def note(self, t: float, region: str | None) -> None:
        if not self.fastest or self.fastest[-1] != region:
            self.times.append(t)
            self.fastest.append(region)

    def at(self, t: float) -> str | None:
        i = bisect.bisect_right(self.times, t) - 1
        return self.fastest[i] if i >= 0 else None

    def swaps(self) -> int:
        """Changes of #1 from one region to another (not counting appearing from or vanishing to nothing)."""
        return sum(1 for a, b in itertools.pairwise(self.fastest) if a is not None and b is not None)


@dataclass(frozen=True, slots=True)
class SimRun:
    """One run: each policy's timeline of #1, and when each region's failed results arrived."""

    timelines: Mapping[str, Timeline]
    failures: Mapping[str, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class PolicyMetrics:
    truly_fastest: float  # fraction of the time (while any region is up) the published #1 is truly fastest
    leader_down: float  # fraction of the time the published #1 is a region that is down
    swaps_per_hour: float
    reactions: Mapping[str, tuple[float | None, ...]]  # event label -> seconds per event (None: never)
    # leave events only: seconds from the first failed result after the event to leaving #1 (the policy's share)
    after_first_failure: Mapping[str, tuple[float | None, ...]]


PolicyFactory = Callable[[float], RankingPolicy]  # interval -> a fresh policy

DEFAULT_POLICIES: Mapping[str, PolicyFactory] = {
    "trusted": TrustedRanking,
    "plain": lambda interval: PlainRanking(),
}


def simulate(
    scenario: Scenario,
    policies: Mapping[str, PolicyFactory] = DEFAULT_POLICIES,
    *,
    seed: int = 0,
    tick: float = 1.0,
) -> SimRun:
    """Run the scenario once; every policy sees the same probe results in the same order."""
    clock = _Clock()
    tracker = RegionLatencyTracker(clock=clock, save_interval=0)
    regions = tuple(sorted(scenario.traces))
    live = {name: make(scenario.interval) for name, make in policies.items()}
    timelines = {name: Timeline() for name in live}
    prober = _Prober(scenario, random.Random(seed))
    failures: dict[str, list[float]] = {region: [] for region in regions}
    snapshot: TrackerSnapshot | None = None
    for t, outcome in prober.run(tick):
        clock.now = t
        if outcome is not None:
            region, latency = outcome
            if latency is None:
                tracker.record_failure(region, "timeout")
                failures[region].append(t)
            else:
                tracker.update_latency(region, latency)
            snapshot = None
        if snapshot is None:
            snapshot = tracker.snapshot()  # ticks reuse it: nothing changed but the time
        for name, policy in live.items():
            timelines[name].note(t, policy.evaluate(snapshot, regions, t).fastest)
    return SimRun(timelines, {region: tuple(times) for region, times in failures.items()})


@dataclass(slots=True)
class _Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


# A pending event of the prober: (due, sequence number, "probe" | "result", region, nominal time | latency | None)
_Entry = tuple[float, int, str, str, float | None]


class _Prober:
    """Probe times as the scheduler makes them (start spread, ±10 % jitter) and what each probe returns."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng

    def run(self, tick: float) -> Iterable[tuple[float, tuple[str, float | None] | None]]:
        """Yield (time, (region, latency or None for a failure)) for results and (time, None) for ticks."""
        sc, rng, seq = self.scenario, self.rng, itertools.count()
        heap: list[_Entry] = []
        for region in sorted(sc.traces):
            due = rng.uniform(0, min(sc.interval * SCHEDULER_JITTER, 1.0))
            heapq.heappush(heap, (due, next(seq), "probe", region, due))
        next_tick = tick
        while heap:
            t, _, kind, region, value = heapq.heappop(heap)
            while next_tick < t and next_tick < sc.duration:
                yield next_tick, None
                next_tick += tick
            if t >= sc.duration:
                break
            if kind == "result":
                yield t, (region, value)
                continue
            nominal = value if value is not None else t
            self._probe(heap, seq, t, region)
            nominal += sc.interval
            due = nominal + rng.uniform(-SCHEDULER_JITTER, SCHEDULER_JITTER) * sc.interval
            heapq.heappush(heap, (due, next(seq), "probe", region, nominal))

    def _probe(self, heap: list[_Entry], seq: itertools.count[int], t: float, region: str) -> None:
        sc, trace, rng = self.scenario, self.scenario.traces[region], self.rng
        noise, spike, lost = rng.gauss(0.0, trace.jitter), rng.random(), rng.random()
        outage = trace.outage_at(t)
        if outage is not None and outage.silent:
            return
        latency = trace.latency_at(t) * math.exp(noise) * (trace.spike_factor if spike < trace.spike_rate else 1.0)
        if outage is not None or lost < trace.loss or latency >= sc.timeout:
            heapq.heappush(heap, (t + sc.timeout, next(seq), "result", region, None))
        else:
            heapq.heappush(heap, (t + latency, next(seq), "result", region, latency))


# -- metrics ---------------------------------------------------------------------------------------------------------


def measure(scenario: Scenario, timeline: Timeline, failures: Mapping[str, Sequence[float]]) -> PolicyMetrics:
    """Compare one policy's published #1 with the trace's ground truth."""
    reactions: dict[str, list[float | None]] = {}
    after_failure: dict[str, list[float | None]] = {}
    for event in scenario.events:
        reaction = _reaction(scenario, timeline, event)
        reactions.setdefault(event.label, []).append(reaction)
        if event.kind == "leave":
            after_failure.setdefault(event.label, []).append(_after_first_failure(event, reaction, failures))
    return PolicyMetrics(
        truly_fastest=_truly_fastest_fraction(scenario, timeline),
        leader_down=_leader_down_fraction(scenario, timeline),
        swaps_per_hour=timeline.swaps() / (scenario.duration / 3600.0),
        reactions={label: tuple(values) for label, values in reactions.items()},
        after_first_failure={label: tuple(values) for label, values in after_failure.items()},
    )


def measure_run(scenario: Scenario, run: SimRun) -> dict[str, PolicyMetrics]:
    """`measure` for every policy of a run."""
    return {name: measure(scenario, timeline, run.failures) for name, timeline in run.timelines.items()}


def _after_first_failure(event: Event, reaction: float | None, failures: Mapping[str, Sequence[float]]) -> float | None:
    """Seconds from the region's first failed result after the event to its leaving #1; None without either."""
    times = failures.get(event.region, ())
    first = next((t for t in times[bisect.bisect_left(times, event.at):] if t < event.until), None)
    if reaction is None or first is None:
        return None
    return max(0.0, event.at + reaction - first)


def _breakpoints(scenario: Scenario, timeline: Timeline, start: float, end: float) -> list[float]:
    points = {start, *timeline.times, *(p for tr in scenario.traces.values() for p in tr.change_points())}
    return sorted(p for p in points if start <= p < end)


def _truly_fastest_fraction(scenario: Scenario, timeline: Timeline) -> float:
    points = [*_breakpoints(scenario, timeline, 0.0, scenario.duration), scenario.duration]
    right = total = 0.0
    for a, b in itertools.pairwise(points):
        truth = scenario.truly_fastest(a)
        if not truth:
            continue
        total += b - a
        if timeline.at(a) in truth:
            right += b - a
    return right / total if total else math.nan


def _leader_down_fraction(scenario: Scenario, timeline: Timeline) -> float:
    points = [*_breakpoints(scenario, timeline, 0.0, scenario.duration), scenario.duration]
    down = 0.0
    for a, b in itertools.pairwise(points):
        published = timeline.at(a)
        if published is not None and scenario.traces[published].outage_at(a) is not None:
            down += b - a
    return down / scenario.duration


def _reaction(scenario: Scenario, timeline: Timeline, event: Event) -> float | None:
    for t in _breakpoints(scenario, timeline, event.at, event.until):
        published = timeline.at(t)
        if event.kind == "leave" and published != event.region:
            return t - event.at
        if event.kind == "follow" and published in scenario.truly_fastest(t):
            return t - event.at
    return None


# -- the standard scenarios ------------------------------------------------------------------------------------------

HOUR = 3600.0


class _Timing(TypedDict):
    """What every standard scenario shares."""

    duration: float
    interval: float
    timeout: float


def _flat(latency: float, **kwargs: object) -> RegionTrace:
    return RegionTrace(levels=((0.0, latency),), **kwargs)  # type: ignore[arg-type]


def _outages(hours: float, first: float, every: float, length: float, *, silent: bool = False) -> tuple[Outage, ...]:
    starts = itertools.takewhile(lambda s: s + length <= hours * HOUR, itertools.count(first * HOUR, every * HOUR))
    return tuple(Outage(s, s + length, silent) for s in starts)


def standard_scenarios(hours: float = 24.0, interval: float = 30.0, timeout: float = 5.0) -> list[Scenario]:
    """The issue's traces: stable, close pair, equal pair, 2x steps, spikes, death, silence, flapping, loss."""
    duration = hours * HOUR
    common = _Timing(duration=duration, interval=interval, timeout=timeout)
    return [
        Scenario("stable", "40 / 60 / 90 ms, 5 % noise", {
            "a": _flat(0.040), "b": _flat(0.060), "c": _flat(0.090)}, **common),
        Scenario("close pair", "50 vs 51 ms (2 % apart, within the 5 % noise of one sample), 90 ms", {
            "a": _flat(0.050), "b": _flat(0.051), "c": _flat(0.090)}, **common),
        Scenario("equal pair", "50 vs 50 ms, 90 ms: either is truly fastest", {
            "a": _flat(0.050), "b": _flat(0.050), "c": _flat(0.090)}, **common),
        _step_scenario(hours, common),
        Scenario("spikes", "50 ms with 3 % of samples 4x, vs 60 ms", {
            "a": _flat(0.050, spike_rate=0.03), "b": _flat(0.060), "c": _flat(0.090)}, **common),
        _death_scenario(hours, common, silent=False),
        _death_scenario(hours, common, silent=True),
        _flapping_scenario(hours, common),
        Scenario("lossy", "50 vs 60 ms, 1 % of probes fail at random", {
            "a": _flat(0.050, loss=0.01), "b": _flat(0.060, loss=0.01), "c": _flat(0.090, loss=0.01)}, **common),
    ]


def _step_scenario(hours: float, common: _Timing) -> Scenario:
    """#1 alternates 50 / 100 ms every hour; #2 sits at 70 ms, between the two."""
    steps = [h * HOUR for h in range(1, math.ceil(hours))]
    levels = ((0.0, 0.050), *((t, 0.100 if i % 2 == 0 else 0.050) for i, t in enumerate(steps)))
    until = [*steps[1:], hours * HOUR]
    events = tuple(
        Event(t, "follow", "2x slower" if i % 2 == 0 else "2x faster", "a", end)
        for i, (t, end) in enumerate(zip(steps, until, strict=True)))
    return Scenario("step 2x", "50 <-> 100 ms every hour, vs 70 ms", {
        "a": RegionTrace(levels=levels), "b": _flat(0.070), "c": _flat(0.120)}, events=events, **common)


def _death_scenario(hours: float, common: _Timing, *, silent: bool) -> Scenario:
    """#1 goes down for 20 minutes every 2 hours: its probes time out, or (silent) return nothing."""
    outages = _outages(hours, 1.0, 2.0, 20 * 60.0, silent=silent)
    label = "silent" if silent else "dead"
    events: list[Event] = []
    for i, outage in enumerate(outages):
        following = outages[i + 1].start if i + 1 < len(outages) else hours * HOUR
        events.append(Event(outage.start, "leave", f"{label}: leaves #1", "a", outage.end))
        events.append(Event(outage.end, "follow", f"{label}: back at #1", "a", following))
    about = ("50 ms region's results stop for 20 min every 2 h (no failures either)" if silent
             else "50 ms region's probes time out for 20 min every 2 h")
    return Scenario(f"{label} #1", about, {
        "a": _flat(0.050, outages=outages), "b": _flat(0.060), "c": _flat(0.080)}, events=tuple(events), **common)


def _flapping_scenario(hours: float, common: _Timing) -> Scenario:
    """For one hour in every four, #1 flaps: down 1 minute, up 2 minutes."""
    outages: list[Outage] = []
    for window in itertools.takewhile(lambda w: w + HOUR <= hours * HOUR, itertools.count(HOUR, 4 * HOUR)):
        outages.extend(Outage(s, s + 60.0) for s in range(int(window), int(window + HOUR), 180))
    return Scenario("flapping #1", "50 ms region down 1 min / up 2 min for 1 h in every 4 h, vs 60 ms", {
        "a": _flat(0.050, outages=tuple(outages)), "b": _flat(0.060), "c": _flat(0.080)}, **common)
