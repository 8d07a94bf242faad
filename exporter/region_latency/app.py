"""The running exporter: configuration -> trackers -> scheduler -> HTTP server, plus reload and shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from region_latency._version import __version__
from region_latency.cache import Cache, FileCache, PrefixedCache
from region_latency.config import Config, ConfigError, parse_listen
from region_latency.export.exporter_families import CacheSaveStatus, ExporterStatus, ExporterStatusCollector
from region_latency.export.probe_debug import ProbeDebugger
from region_latency.export.prometheus import build_registry
from region_latency.export.web import ExporterApp, WebHooks, WebServer
from region_latency.export.webconfig import WebConfigFile
from region_latency.lifecycle import Reloader
from region_latency.probes import get_probe
from region_latency.probes.base import ProbeResult, Target
from region_latency.ranking import RankingSettings, policy_for
from region_latency.recent import RecentProbes
from region_latency.resolve import load_config_isolated
from region_latency.scheduler import Job, Scheduler
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.targets import ResolvedConfig, load_targets, resolve_targets
from region_latency.tracker import RegionLatencyTracker

if TYPE_CHECKING:
    from region_latency.export.otel import OtlpExporter

log = logging.getLogger(__name__)


def cache_prefix(info: TargetInfo) -> str:
    """Where a target's averages live in the shared cache: its name, service and probe kind.

    Not the name alone: a target renamed, or given another service or probe kind under the same name, measures
    something else, and must not start from the old averages (a tcp connect EMA is not an https ttfb EMA).
    Service names and probe kinds hold no `:`, so the key reads back unambiguously from the right. An https
    target measuring `warm` or `cold` keeps its averages apart too (`...:https+warm`): neither is a ttfb EMA; so
    does each IP family of a target with `ip_families` (`...:tcp+ipv6`).
    """
    probe = info.probe if info.measure in (None, "ttfb") else f"{info.probe}+{info.measure}"
    if info.ip_family is not None:  # one EMA per family: `...:https+ipv6`
        probe = f"{probe}+{info.ip_family}"
    return f"{info.name}:{info.service}:{probe}"


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


@dataclass(frozen=True)
class WebOptions:
    """How `serve` serves (flags, not the config file): `--web.telemetry-path`, `--web.enable-lifecycle`,
    `--web.config.file` (TLS, basic auth; loaded and validated by the caller)."""

    metrics_path: str = "/metrics"
    lifecycle: bool = True  # the library default; `serve` turns it off unless --web.enable-lifecycle
    web_config: WebConfigFile | None = None


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
                 probe_thread_setup: Callable[[], None] | None = None, web: WebOptions | None = None) -> None:
        """`config` is what `source.load()` returned (loaded already), or a Config made in code, resolved here;
        None: load it from `source`. `probe_thread_setup` runs in each probe thread before its first probe (the
        demo enters a netns). `web`: how to serve (see WebOptions)."""
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
        self._retired_saves: tuple[int, float | None] = (0, None)  # (failed saves, last success) of closed trackers
        self._reload_lock = threading.Lock()
        self.recent = RecentProbes()  # the status page's charts and recent probes (bounded, in memory)
        self.scheduler = Scheduler(self.config.concurrency, on_tick=self._reevaluate,
                                   thread_initializer=probe_thread_setup)
        self.otlp: OtlpExporter | None = None
        self._apply(self.resolved)
        self.web_options = web or WebOptions()
        self.reloader = Reloader(self.reload)
        self.registry = build_registry(self.snapshots, extra=[ExporterStatusCollector(self.status)])
        if self.config.otlp.active:  # the OpenTelemetry SDK is imported only when the push is on
            from region_latency.export.otel import OtlpExporter, OtlpStatusCollector

            self.otlp = OtlpExporter(self.config.otlp, self.snapshots)
            self.registry.runtime.register(OtlpStatusCollector(self.otlp))
        hooks = WebHooks(snapshots=self.snapshots, ready=self.ready, reload=self.request_reload, recent=self.recent,
                         debug_probe=ProbeDebugger(lambda: self.resolved, thread_setup=probe_thread_setup),
                         reload_status=lambda: self.reloader.status)
        host, port = parse_listen(self.config.listen)
        app = ExporterApp(self.registry, hooks, metrics_path=self.web_options.metrics_path,
                          lifecycle=self.web_options.lifecycle)
        self.web = WebServer(app, host, port, web_config=self.web_options.web_config)

    # -- state -----------------------------------------------------------------------------------

    def snapshots(self) -> list[TargetSnapshot]:
        return [state.snapshot() for state in list(self.states.values())]

    def status(self) -> ExporterStatus:
        """The exporter's own state for /metrics (reloads, cache saves)."""
        if self.cache is None:
            return ExporterStatus(reload=self.reloader.status, cache=None)
        failures, last_success = self._retired_saves
        for state in list(self.states.values()):
            saver = state.tracker.saver
            if saver is not None:
                status = saver.status
                failures += status.saves_failed_total
                if status.last_success_time is not None:
                    last_success = max(last_success or 0.0, status.last_success_time)
        return ExporterStatus(reload=self.reloader.status, cache=CacheSaveStatus(failures, last_success))

    def _retire(self, tracker: RegionLatencyTracker) -> None:
        """Close a tracker that goes (a target removed or changed), keeping its saver's counts in the totals
        (a counter on /metrics must not go down)."""
        tracker.close()
        saver = tracker.saver
        if saver is not None:
            failures, last_success = self._retired_saves
            status = saver.status
            if status.last_success_time is not None:
                last_success = max(last_success or 0.0, status.last_success_time)
            self._retired_saves = (failures + status.saves_failed_total, last_success)

    def ready(self) -> bool:
        """Ready once a full sweep finished, or at once when the cache held a (still fresh) ranking."""
        if self.scheduler.sweep_done():
            return True
        return self._cache_loaded and any(state.snapshot().ranking.ranked() for state in list(self.states.values()))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.web.start()
        if self.otlp is not None:
            self.otlp.start()
        self.scheduler.start()
        self._log_start()

    def _log_start(self) -> None:
        """The line an operator looks for at 3 a.m.: what runs, where it listens, and what it probes."""
        host, port = self.web.address
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.web.tls else "http"
        targets = "; ".join(f"{t.name} ({t.config.service} via {t.config.probe}, {len(t.regions)} regions)"
                            for t in self.resolved.targets)
        log.info("starting region-latency-exporter %s", __version__, extra={
            "version": __version__,
            "address": f"{scheme}://{shown}:{port}{self.web_options.metrics_path}",
            "tls": "on" if self.web.tls else "off",
            "basic_auth": "on" if self.web.basic_auth else "off",
            "lifecycle": "on" if self.web_options.lifecycle else "off",
            "targets": targets,
            "regions": sum(len(s.regions) for s in self.states.values()),
            "cache": self.config.cache.type,
        })

    def request_reload(self) -> Future[str | None]:
        """A reload on the reload thread (serialized, at most one a second; see region_latency.lifecycle)."""
        return self.reloader.request()

    def stop(self) -> None:
        """Stop scheduling, let in-flight probes finish (bounded by their timeout), save caches."""
        self.reloader.stop()
        timeout = max((t.timeout for t in self.config.targets), default=5.0) + 1.0
        if not self.scheduler.stop(timeout=timeout):
            log.warning("some probes were still running after %.1fs; exiting anyway", timeout)
        for state in self.states.values():
            state.tracker.close()
        if self.otlp is not None:
            self.otlp.stop()  # one last push, bounded by the export timeout (at most 5 s)
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
        if config.otlp != self.config.otlp:
            raise ConfigError("", "otlp", "changing the OTLP settings needs a restart")

    # -- internals -------------------------------------------------------------------------------

    def _apply(self, resolved: ResolvedConfig) -> None:
        """Build or update one TargetState per configured target, then hand the jobs to the scheduler."""
        ranking = resolved.config.ranking
        jobs = []
        for target in resolved.targets:
            name, config = target.key, target.config  # key: the name, or name@family for one IP family
            regions, targets = list(target.regions), target.probe_targets()
            policy = policy_for(ranking, config.interval)
            # A reload with the same ranking settings keeps the policy: its #1 and ejection history survive.
            policy_key = (ranking, config.interval)
            keep_policy = self._policy_keys.get(name) == policy_key
            self._policy_keys[name] = policy_key
            state = self.states.get(name)
            info = TargetInfo(name=target.name, service=config.service, probe=config.probe,
                              measure=getattr(config.options, "measure", None), ip_family=target.ip_family)
            if state is None or state.info != info:
                if state is not None:
                    self._retire(state.tracker)
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
                    on_result=_recorder(state, region, self.recent, self._on_result),
                ))
        for name in set(self.states) - {t.key for t in resolved.targets}:
            self._retire(self.states.pop(name).tracker)
            self._targets.pop(name, None)
            self._policy_keys.pop(name, None)
        self.scheduler.set_jobs(jobs)

    def _on_result(self, info: TargetInfo, region: str, result: ProbeResult) -> None:
        """After a result is recorded: the OTLP push's raw-sample histogram takes it too."""
        if self.otlp is not None:
            self.otlp.on_result(info, region, result)

    def _reevaluate(self) -> None:
        """Re-rank on the clock too, so a region that stops producing results still goes stale."""
        now = time.time()
        for state in list(self.states.values()):
            state.reevaluate(now)


def _recorder(state: TargetState, region: str, recent: RecentProbes,
              listener: Callable[[TargetInfo, str, ProbeResult], None] | None = None,
              ) -> Callable[[Target, ProbeResult], None]:
    """The job callback that records one region's results into its target state (and the status page's ring),
    then tells `listener` (the OTLP push's histogram)."""
    def record(_target: Target, result: ProbeResult) -> None:
        state.record(region, result)
        recent.add(state.info.key, region, time.time(), result, state.tracker.get_latency(region))
        if listener is not None:
            listener(state.info, region, result)

    return record
