"""The running exporter: configuration -> trackers -> scheduler -> HTTP server, plus reload and shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from region_latency.cache import Cache, FileCache, PrefixedCache
from region_latency.config import Config, ConfigError, parse_listen
from region_latency.export.prometheus import build_registry
from region_latency.export.web import ExporterApp, WebHooks, WebServer
from region_latency.probes import get_probe
from region_latency.probes.base import ProbeResult, Target
from region_latency.ranking import RankingSettings, policy_for
from region_latency.resolve import load_config_isolated
from region_latency.scheduler import Job, Scheduler
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.targets import ResolvedConfig, load_targets, resolve_targets
from region_latency.tracker import RegionLatencyTracker

log = logging.getLogger(__name__)


def cache_prefix(info: TargetInfo) -> str:
    """Where a target's averages live in the shared cache: its name, service and probe kind.

    Not the name alone: a target renamed, or given another service or probe kind under the same name, measures
    something else, and must not start from the old averages (a tcp connect EMA is not an https ttfb EMA).
    Service names and probe kinds hold no `:`, so the key reads back unambiguously from the right.
    """
    return f"{info.name}:{info.service}:{info.probe}"


@dataclass(frozen=True)
class ConfigSource:
    """Where the configuration comes from, kept so that a reload reads it the same way.

    `isolated` (the default) works out regions and endpoint URLs in a short-lived child process (see
    region_latency.resolve), so that this long-running process never imports botocore for them.
    """

    path: str | Path | None
    env: Mapping[str, str] | None
    overrides: Mapping[str, object] | None
    isolated: bool = True

    def load(self) -> ResolvedConfig:
        """The configuration with its targets resolved; ConfigError (one line) when it is invalid."""
        if self.isolated:
            return load_config_isolated(self.path, env=self.env, overrides=self.overrides)
        return load_targets(self.path, env=self.env, overrides=self.overrides)


def make_cache(config: Config) -> Cache | None:
    kind = config.cache.type
    if kind == "none":
        return None
    if kind == "redis":
        from region_latency.cache.redis import RedisCache

        return RedisCache(config.cache.url, key_prefix=config.cache.key_prefix)
    return FileCache(config.cache.path)


class Exporter:
    """Owns the trackers, their states, the scheduler and the web server of one process."""

    def __init__(self, source: ConfigSource, config: ResolvedConfig | Config | None = None, *,
                 probe_thread_setup: Callable[[], None] | None = None) -> None:
        """`config` is what `source.load()` returned (loaded already), or a Config made in code, resolved here;
        None: load it from `source`. `probe_thread_setup` runs in each probe thread before its first probe (the
        demo enters a netns)."""
        self.source = source
        if config is None:
            config = source.load()
        elif isinstance(config, Config):
            config = resolve_targets(config, "config")
        self.resolved = config
        self.config = config.config
        self.cache = make_cache(self.config)
        self.states: dict[str, TargetState] = {}
        self._targets: dict[str, dict[str, Target]] = {}
        self._policy_keys: dict[str, tuple[RankingSettings, float]] = {}
        self._cache_loaded = False
        self._reload_lock = threading.Lock()
        self.scheduler = Scheduler(self.config.concurrency, on_tick=self._reevaluate,
                                   thread_initializer=probe_thread_setup)
        self._apply(self.resolved)
        self.registry = build_registry(self.snapshots)
        hooks = WebHooks(snapshots=self.snapshots, ready=self.ready, reload=self.reload)
        host, port = parse_listen(self.config.listen)
        self.web = WebServer(ExporterApp(self.registry, hooks), host, port)

    # -- state -----------------------------------------------------------------------------------

    def snapshots(self) -> list[TargetSnapshot]:
        return [state.snapshot() for state in list(self.states.values())]

    def ready(self) -> bool:
        """Ready once a full sweep finished, or at once when the cache held a (still fresh) ranking."""
        if self.scheduler.sweep_done():
            return True
        return self._cache_loaded and any(state.snapshot().ranking.ranked() for state in list(self.states.values()))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.web.start()
        self.scheduler.start()
        host, port = self.web.address
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d/metrics; probing %d target(s), %d region(s)",
                 shown, port, len(self.states), sum(len(s.regions) for s in self.states.values()))

    def stop(self) -> None:
        """Stop scheduling, let in-flight probes finish (bounded by their timeout), save caches."""
        timeout = max((t.timeout for t in self.config.targets), default=5.0) + 1.0
        if not self.scheduler.stop(timeout=timeout):
            log.warning("some probes were still running after %.1fs; exiting anyway", timeout)
        for state in self.states.values():
            state.tracker.close()
        self.web.stop()

    def reload(self) -> str | None:
        """Re-read the configuration; keep tracker state of unchanged targets. Returns an error or None."""
        with self._reload_lock:
            try:
                resolved = self.source.load()
                self._check_reloadable(resolved.config)
                self._apply(resolved)
            except (ConfigError, ValueError) as exc:
                log.error("reload failed, keeping the running configuration: %s", exc)
                return str(exc)
            self.resolved, self.config = resolved, resolved.config
            log.info("configuration reloaded: %d target(s)", len(self.states))
            return None

    def _check_reloadable(self, config: Config) -> None:
        if config.listen != self.config.listen:
            raise ConfigError("", "listen", f"changing the listen address ({self.config.listen} -> "
                                            f"{config.listen}) needs a restart")
        if config.cache != self.config.cache:
            raise ConfigError("", "cache", "changing the cache needs a restart")

    # -- internals -------------------------------------------------------------------------------

    def _apply(self, resolved: ResolvedConfig) -> None:
        """Build or update one TargetState per configured target, then hand the jobs to the scheduler."""
        ranking = resolved.config.ranking
        jobs = []
        for target in resolved.targets:
            name, config = target.name, target.config
            regions, targets = list(target.regions), target.probe_targets()
            policy = policy_for(ranking, config.interval)
            # A reload with the same ranking settings keeps the policy: its #1 and ejection history survive.
            policy_key = (ranking, config.interval)
            keep_policy = self._policy_keys.get(name) == policy_key
            self._policy_keys[name] = policy_key
            state = self.states.get(name)
            info = TargetInfo(name=name, service=config.service, probe=config.probe)
            if state is None or state.info != info:
                if state is not None:
                    state.tracker.close()
                cache = PrefixedCache(self.cache, cache_prefix(info)) if self.cache is not None else None
                tracker = RegionLatencyTracker(cache=cache, logger=logging.getLogger(f"region_latency.{name}"))
                self._cache_loaded |= bool(set(tracker.regions()) & set(regions))
                state = TargetState(info, regions, tracker, policy, metrics=config.metrics)
                self.states[name] = state
            else:
                state.set_regions(regions, None if keep_policy else policy)
                state.set_metrics(config.metrics)
            self._targets[name] = targets
            probe = get_probe(config.probe)
            for region, probe_target in targets.items():
                jobs.append(Job(
                    key=f"{name}/{region}",
                    target=probe_target,
                    probe=probe,
                    interval=config.interval,
                    timeout=config.timeout,
                    on_result=_recorder(state, region),
                ))
        for name in set(self.states) - {t.name for t in resolved.targets}:
            self.states.pop(name).tracker.close()
            self._targets.pop(name, None)
            self._policy_keys.pop(name, None)
        self.scheduler.set_jobs(jobs)

    def _reevaluate(self) -> None:
        """Re-rank on the clock too, so a region that stops producing results still goes stale."""
        now = time.time()
        for state in list(self.states.values()):
            state.reevaluate(now)


def _recorder(state: TargetState, region: str) -> Callable[[Target, ProbeResult], None]:
    """The job callback that records one region's results into its target state."""
    def record(_target: Target, result: ProbeResult) -> None:
        state.record(region, result)

    return record
