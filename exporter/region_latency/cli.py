"""The command line: `serve` (the exporter), `probe` (one-shot ranking), `regions`, `check-config`.

Every user error (bad config, bad flag, port in use) ends in one line on stderr and a non-zero exit,
never a traceback: exit 2 for bad input, 1 for a runtime failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import signal
import statistics
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from region_latency._version import __version__
from region_latency.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, redact, setup_logging

if TYPE_CHECKING:
    from region_latency.targets import ResolvedConfig, ResolvedTarget

# The config code (pydantic, yaml) is imported where it is used: `serve` first starts the child process that works
# out regions and URLs, and then imports it while that child runs.

log = logging.getLogger("region_latency")

CONFIG_HELP = "YAML configuration file (default: $REGION_LATENCY_CONFIG, else the built-in default)."
WEB_CONFIG_HELP = ("Web config file (TLS, basic auth) in exporter-toolkit's format; re-read when it changes "
                   "(docs/OPERATIONS.md).")


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _load(config_path: str | None) -> ResolvedConfig:
    """The configuration with its targets resolved in this process (botocore included), or exit 2."""
    from region_latency.config import ConfigError
    from region_latency.targets import load_targets

    try:
        return load_targets(config_path)
    except ConfigError as exc:
        _fail(str(exc))


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at 2 (unless MALLOC_ARENA_MAX is set), before any probe thread starts.

    glibc gives busy threads arenas of their own; with up to 64 probe threads the exporter's RSS grew
    ~10 KB per probe, about half of that with two arenas (bench/BENCHMARKS.md, footprint). A no-op
    where libc has no mallopt (musl, macOS).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    m_arena_max = -8  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_arena_max, 2)


def version_text() -> str:
    """What `--version` prints: the version, the Python that runs it and the platform (as node_exporter does)."""
    return (f"region-latency-exporter, version {__version__}\n"
            f"  python:   {platform.python_version()} ({platform.python_implementation()})\n"
            f"  platform: {platform.system().lower()}/{platform.machine()} ({platform.platform()})")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


_version_option = click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                               help="Print the version, Python and platform, and exit.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_version_option
def cli() -> None:
    """Measure latency to AWS regional endpoints, rank regions fastest first, and export it.

    \b
    Run the exporter:        region-latency-exporter serve
    Rank regions once:       region-latency-exporter probe --service bedrock-runtime
    See what gets probed:    region-latency-exporter regions bedrock-runtime
    Validate a config file:  region-latency-exporter check-config --config config.yaml
    """


@cli.command()
@_version_option
@click.option("--config.file", "--config", "config_path", help=CONFIG_HELP)
@click.option("--web.listen-address", "--listen", "listen", help="Address for /metrics, host:port (default :9720).")
@click.option("--web.config.file", "web_config_path", help=WEB_CONFIG_HELP)
@click.option("--web.telemetry-path", "metrics_path", default="/metrics", show_default=True,
              help="Path under which to expose metrics.")
@click.option("--web.enable-lifecycle", "lifecycle", is_flag=True,
              help="Enable reloads over HTTP (POST or PUT /-/reload); SIGHUP reloads either way.")
@click.option("--cache", "cache_type", type=click.Choice(["file", "redis", "none"]), help="Where state persists.")
@click.option("--cache-path", type=click.Path(dir_okay=False), help="File for the file cache.")
@click.option("--redis-url", help="URL of the redis cache, e.g. redis://localhost:6379/0.")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Probes in flight at most.")
@click.option("--log.level", "--log-level", "log_level", type=click.Choice(list(LOG_LEVELS), case_sensitive=False),
              help="Only log messages with the given severity or above (default: the config's log_level, info).")
@click.option("--log.format", "log_format", type=click.Choice(list(LOG_FORMATS)), default="logfmt",
              show_default=True, help="Output format of log messages.")
def serve(config_path: str | None, listen: str | None, web_config_path: str | None, metrics_path: str,
          lifecycle: bool, cache_type: str | None, cache_path: str | None, redis_url: str | None,
          concurrency: int | None, log_level: str | None, log_format: LogFormat) -> None:
    """Run the exporter: probe on a schedule and serve /metrics, /regions and a status page.

    SIGHUP re-reads the configuration (and POST /-/reload, with --web.enable-lifecycle); SIGTERM or Ctrl-C stop
    it cleanly (in-flight probes finish within their timeout, the cache is saved).
    """
    if not metrics_path.startswith("/") or metrics_path.startswith("/-/") or metrics_path in ("/", "/regions"):
        _fail(f"--web.telemetry-path must start with / and not be /, /regions or under /-/ (got {metrics_path!r})")
    overrides = {"listen": listen, "cache": cache_type, "cache_path": cache_path, "redis_url": redis_url,
                 "concurrency": concurrency, "log_level": log_level.lower() if log_level else None}
    given = {k: v for k, v in overrides.items() if v is not None}
    from region_latency.resolve import PendingConfig

    # Regions and endpoint URLs are worked out in a child process (this one never imports botocore for them),
    # which does its imports while this one does its own.
    pending = PendingConfig(config_path, overrides=given)
    from region_latency.app import ConfigSource, Exporter, WebOptions
    from region_latency.config import ConfigError

    try:
        loaded = pending.result()
    except ConfigError as exc:
        _fail(str(exc))
    source = ConfigSource(config_path, None, given)
    setup_logging(loaded.config.log_level, log_format)
    web_config = _load_web_config(web_config_path) if web_config_path is not None else None
    _limit_malloc_arenas()
    web = WebOptions(metrics_path=metrics_path, lifecycle=lifecycle, web_config=web_config)
    try:
        exporter = Exporter(source, loaded, web=web)
    except OSError as exc:
        _fail(f"cannot listen on {loaded.config.listen}: {exc.strerror or exc}", 1)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    _run_until_signalled(exporter)


def _run_until_signalled(exporter: Any) -> None:
    """Start, then run until SIGTERM/SIGINT (SIGHUP reloads); stop cleanly."""
    stop = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        exporter.request_reload()  # on the reload thread, serialized with HTTP reloads

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    exporter.start()
    while not stop.wait(1.0):
        pass
    exporter.stop()
    log.info("stopped")


@cli.command()
@click.option("--listen", default="127.0.0.1:9720", show_default=True, help="Address for /metrics.")
@click.option("--region", "regions", multiple=True, metavar="NAME=RTT",
              help="A simulated region, e.g. us-east-1=90ms or eu-west-1=25ms,jitter=2ms,loss=0.01 "
                   "(repeatable; default: six regions with round trips as seen from Frankfurt).")
@click.option("--interval", default="5s", show_default=True, help="Probe interval.")
@click.option("--proxy", is_flag=True, help="Use the delay proxy even as root (it cannot delay TCP handshakes).")
def demo(listen: str, regions: Sequence[str], interval: str, proxy: bool) -> None:
    """Run the exporter against simulated regions with known round-trip times (no AWS needed).

    As root the packets themselves are delayed (a TUN delay line between network namespaces);
    otherwise an application-level delay proxy stands in. Stop with Ctrl-C.
    """
    setup_logging("info")
    from pydantic import ValidationError

    from region_latency.config import ConfigError

    try:  # the simulator is a development tool, outside the runtime package: imported only here
        from region_latency_devkit.demo import demo_config, demo_simulator, probe_thread_setup
    except ImportError as exc:
        _fail(f"the demo needs the demo extra: pip install 'region-latency-exporter[demo]' ({exc})", 1)
    try:
        sim = demo_simulator(regions, proxy)
    except ValueError as exc:
        _fail(str(exc))
    from region_latency.app import ConfigSource, Exporter

    with sim:
        try:
            config = demo_config(sim, listen, interval)
        except ValidationError as exc:
            _fail(str(ConfigError.from_validation(exc, source="demo")))
        try:
            exporter = Exporter(ConfigSource(None, {}, {}), config, probe_thread_setup=probe_thread_setup(sim))
        except OSError as exc:
            _fail(f"cannot listen on {listen}: {exc.strerror or exc}", 1)
        for region in sim.regions:
            log.info("simulated %-16s rtt %6.1f ms  %s", region, sim.spec(region).rtt * 1000, sim.endpoint_url(region))
        log.info("simulator mode: %s; open http://%s/ for the ranking", sim.mode, listen)
        _run_until_signalled(exporter)


@cli.command()
@click.option("--config.file", "--config", "config_path", help=CONFIG_HELP)
@click.option("--service", help="Probe this service instead of the configured targets (e.g. bedrock-runtime).")
@click.option("--probe", "probe_kind", type=click.Choice(["tcp", "https", "api"]), default="https",
              show_default=True, help="Probe kind, with --service.")
@click.option("--region", "regions", multiple=True, help="Only these regions (repeatable; default: all).")
@click.option("--endpoint", "endpoints", multiple=True, metavar="REGION=URL",
              help="Explicit endpoint URL for a region (repeatable).")
@click.option("--partition", default="aws", show_default=True, help="Partition for --service.")
@click.option("-n", "--count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Probes per region.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--timeout", type=click.FloatRange(0.01, 300), default=5.0, show_default=True, help="Seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def probe(config_path: str | None, service: str | None, probe_kind: str, regions: Sequence[str],
          endpoints: Sequence[str], partition: str, count: int, concurrency: int, timeout: float,
          as_json: bool) -> None:
    """Probe every region COUNT times now and print them ranked (like gcping/awsping).

    Exits 1 when every probe of a region failed (and says which regions), so that scripts and CI notice.
    """
    setup_logging("warning")
    targets = _probe_targets_from_flags(config_path, service, probe_kind, regions, endpoints, partition, timeout)
    report = [_probe_target(target, count, concurrency) for target in targets]
    if as_json:
        click.echo(json.dumps({"targets": report}, indent=2))
    else:
        for entry in report:
            _print_table(entry)
    dead = [f"{entry['name']}/{row['region']} ({row['last_error']})"
            for entry in report for row in entry["regions"] if row["ok"] == 0]
    if dead:
        _fail(f"every probe failed in {len(dead)} region(s): {', '.join(dead)}", 1)


def _probe_targets_from_flags(config_path: str | None, service: str | None, probe_kind: str,
                              regions: Sequence[str], endpoints: Sequence[str], partition: str,
                              timeout: float) -> list[ResolvedTarget]:
    from pydantic import ValidationError

    from region_latency.config import ConfigError, TargetConfig
    from region_latency.targets import PlacementError, resolve_target

    explicit: dict[str, str] = {}
    for item in endpoints:
        region, sep, url = item.partition("=")
        if not sep or not region or not url:
            _fail(f"--endpoint takes REGION=URL, got {item!r}")
        explicit[region] = url
    if service is None:
        if regions or explicit:
            _fail("--region and --endpoint need --service (or put them in the config file)")
        return list(_load(config_path).targets)
    try:
        target = TargetConfig.model_validate({
            "service": service, "probe": probe_kind, "partition": partition,
            "regions": list(regions) if regions else "auto", "endpoints": explicit,
            "timeout": timeout, "interval": max(timeout * 2, 30.0),
        })
        return [resolve_target(target)]
    except ValidationError as exc:
        _fail(str(ConfigError.from_validation(exc, source="flags")))
    except PlacementError as exc:
        _fail(str(ConfigError.at("flags", exc.path, exc.problem)))


def _probe_target(target: ResolvedTarget, count: int, concurrency: int) -> dict[str, Any]:
    from region_latency.probes import get_probe
    from region_latency.scheduler import Job, run_sweep
    from region_latency.tracker import RegionLatencyTracker

    config = target.config
    probes = target.probe_targets()
    tracker = RegionLatencyTracker()
    probe_fn = get_probe(config.probe)
    samples: dict[str, list[float]] = {region: [] for region in probes}
    errors: dict[str, list[str]] = {region: [] for region in probes}

    def record(probe_target: Any, result: Any) -> None:
        tracker.record(probe_target.region, result)
        if result.latency is not None:
            samples[probe_target.region].append(result.latency)
        else:
            errors[probe_target.region].append(f"{result.error}: {result.detail}")

    jobs = [Job(f"{config.name}/{r}", t, probe_fn, config.interval, config.timeout, record) for r, t in probes.items()]
    show_bar = sys.stderr.isatty()
    with click.progressbar(length=count * len(jobs), label=f"probing {config.name}", file=sys.stderr,
                           hidden=not show_bar) as bar:
        for _ in range(count):
            run_sweep(jobs, concurrency)
            bar.update(len(jobs))
    rows = []
    for rank, region in enumerate(tracker.get_sorted_regions(list(probes)), start=1):
        ok = samples[region]
        rows.append({
            "rank": rank if ok else None,
            "region": region,
            "url": probes[region].url,
            "median_seconds": statistics.median(ok) if ok else None,
            "ema_seconds": tracker.get_latency(region),
            "ok": len(ok),
            "errors": len(errors[region]),
            "last_error": errors[region][-1] if errors[region] else None,
        })
    return {"name": config.name, "service": config.service, "probe": config.probe, "regions": rows}


def _print_table(entry: dict[str, Any]) -> None:
    click.echo(f"{entry['name']} ({entry['service']}, {entry['probe']} probe)")
    click.echo(f"{'rank':>4}  {'region':<18} {'median':>10} {'ema':>10} {'ok':>5} {'err':>5}  last error")
    for row in entry["regions"]:
        median = "" if row["median_seconds"] is None else f"{row['median_seconds'] * 1000:.1f} ms"
        ema = "" if row["ema_seconds"] is None else f"{row['ema_seconds'] * 1000:.1f} ms"
        rank = "" if row["rank"] is None else str(row["rank"])
        click.echo(f"{rank:>4}  {row['region']:<18} {median:>10} {ema:>10} {row['ok']:>5} {row['errors']:>5}  "
                   f"{row['last_error'] or ''}")


@cli.command()
@click.argument("service")
@click.option("--partition", default="aws", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def regions(service: str, partition: str, as_json: bool) -> None:
    """List the regions and endpoint URLs botocore knows for SERVICE."""
    from region_latency.regions import available_regions, endpoint_url

    try:
        rows = [{"region": r, "url": endpoint_url(service, r)} for r in available_regions(service, partition)]
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"service": service, "partition": partition, "regions": rows}, indent=2))
        return
    if not rows:
        click.echo(f"botocore knows no {partition} regions for {service}", err=True)
    for row in rows:
        click.echo(f"{row['region']:<18} {row['url']}")


def _load_web_config(path: str) -> Any:
    """The web config file, loaded and checked (certificates and keys read), or exit 2 with one line."""
    from region_latency.export.webconfig import WebConfigError, WebConfigFile

    try:
        return WebConfigFile(path)
    except WebConfigError as exc:
        _fail(f"--web.config.file: {exc}")


def _describe_web_config(web_config: Any) -> str:
    """One line about a web config, without a secret in it (no user names, hashes or key material)."""
    settings = web_config.current()
    tls = settings.config.tls_server_config
    parts = [f"TLS {'on' if settings.tls else 'off'}"]
    if settings.tls:
        parts.append(f"{tls.min_version}-{tls.max_version}")
        parts.append(f"client certificates: {tls.client_auth_type}")
    users = len(settings.config.basic_auth_users)
    parts.append(f"basic auth: {users} user(s)" if users else "basic auth off")
    if settings.limiter is not None:
        parts.append("rate limited")
    return ", ".join(parts)


@cli.command("check-config")
@click.option("--config.file", "--config", "config_path", help=CONFIG_HELP)
@click.option("--web.config.file", "web_config_path", help=WEB_CONFIG_HELP)
def check_config(config_path: str | None, web_config_path: str | None) -> None:
    """Validate the configuration (and a web config file), resolve its regions, and print the effective settings.

    Passwords in URLs (a redis cache's) are printed as xxxxx.
    """
    web_config = _load_web_config(web_config_path) if web_config_path is not None else None
    loaded = _load(config_path)
    click.echo(redact(loaded.dump()), nl=False)
    if web_config is not None:
        click.echo(f"# web config {web_config_path}: {_describe_web_config(web_config)}", err=True)
    for target in loaded.targets:
        config = target.config
        click.echo(f"# target {config.name}: {config.service} via {config.probe}, {len(target.regions)} "
                   f"region(s), every {config.interval:g}s, timeout {config.timeout:g}s", err=True)
    otlp = loaded.config.otlp
    if otlp.active:
        headers = f", headers {', '.join(otlp.headers)} (values hidden)" if otlp.headers else ""
        click.echo(f"# otlp: {otlp.protocol} to {otlp.url} every {otlp.interval:g}s, timeout {otlp.timeout:g}s"
                   f"{headers}", err=True)
    click.echo("configuration OK", err=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="region-latency-exporter")


if __name__ == "__main__":
    main()
