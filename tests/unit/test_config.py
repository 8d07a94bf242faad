"""region_latency.config: schema, defaults, env/CLI precedence and one-line errors that name the field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from pydantic import ValidationError

from region_latency import regions
from region_latency.config import (
    CacheConfig,
    Config,
    ConfigError,
    TargetConfig,
    format_duration,
    load_config,
    parse_duration,
    parse_listen,
)
from region_latency.probes.https import HttpsOptions
from region_latency.ranking import RankingSettings
from region_latency.targets import ResolvedTarget, load_targets, resolve_target


def resolved(data: dict[str, Any]) -> ResolvedTarget:
    """A target validated from `data`, then its regions and URLs worked out (botocore)."""
    return resolve_target(TargetConfig.model_validate(data))

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default cache path lives under ~: keep it inside the test's directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# --- defaults -----------------------------------------------------------------------------------------------------


def test_default_config_without_file(tmp_path: Path) -> None:
    loaded = load_targets(None, env={})
    config = loaded.config
    assert config == Config()
    assert config.listen == ":9720" and config.listen_address == ("0.0.0.0", 9720)
    default_path = tmp_path / "home/.cache/region-latency-exporter/latencies.json"
    assert config.cache == CacheConfig(type="file", path=default_path)
    assert config.concurrency == 64 and config.log_level == "info" and config.ranking == RankingSettings()
    (target,) = config.targets
    assert (target.name, target.service, target.probe, target.partition) == (
        "bedrock-runtime-https", "bedrock-runtime", "https", "aws")
    assert target.regions == "auto" and target.interval == 30.0 and target.timeout == 5.0
    assert target.options == HttpsOptions()
    (placed,) = loaded.targets
    assert list(placed.regions) == regions.available_regions("bedrock-runtime")
    assert placed.endpoint_for("us-east-1") == "https://bedrock-runtime.us-east-1.amazonaws.com"


def test_loading_the_schema_needs_no_botocore(tmp_path: Path) -> None:
    """config.py is the schema only: validating a file imports no botocore (region_latency.targets does)."""
    path = write(tmp_path, "targets: [{service: bedrock-runtime, regions: [us-east-1], options: {path: /x}}]\n")
    code = ("import sys\nfrom region_latency.config import load_config\n"
            f"c = load_config({str(path)!r}, env={{}})\n"
            "print(c.targets[0].options.path, 'botocore' in sys.modules, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["/x", "False", "False"], out.stderr


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n"])
def test_an_empty_file_is_refused_in_one_line_not_taken_as_the_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (f"{path}: the file has no settings (empty, or only comments); put at least one key "
                               "in it, or leave the config file out for the built-in default")
    assert load_config(None, env={}) == Config()  # no file at all: the default


@pytest.mark.parametrize(("text", "message"), [
    ("concurrency: abc\n", "concurrency: must be a whole number (got 'abc')"),
    ("concurrency: 2.5\n", "concurrency: must be a whole number (got 2.5)"),
    ("concurrency: [1]\n", "concurrency: must be a whole number (got a list)"),
    ("targets:\n  - service: s3\n    interval: 1.0e+300\n", "targets[0].interval: must be at most 24h (got 1e+300)"),
    ("targets:\n  - service: s3\n    interval: 2d\n", "targets[0].interval: invalid duration"),
    ("targets:\n  - service: s3\n    timeout: 25h\n    interval: 1h\n", "targets[0].timeout: must be at most 24h"),
])
def test_number_errors_are_our_words_not_pydantics(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    assert "Input should be" not in str(info.value) and "\n" not in str(info.value)


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 3\n")
    assert load_config(None, env={"REGION_LATENCY_CONFIG": str(path)}).concurrency == 3
    other = tmp_path / "other.yaml"
    other.write_text("concurrency: 4\n")
    assert load_config(other, env={"REGION_LATENCY_CONFIG": str(path)}).concurrency == 4  # explicit path wins


def test_example_config_loads() -> None:
    loaded = load_targets(EXAMPLE, env={})
    names = [t.name for t in loaded.config.targets]
    assert len(names) == len(set(names)) >= 2
    vpc = next(t for t in loaded.targets if t.config.endpoints)
    region, url = next(iter(vpc.config.endpoints.items()))
    assert vpc.endpoint_for(region) == url


def test_models_are_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.concurrency = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.targets[0].interval = 1.0  # type: ignore[misc]


def test_models_are_hashable() -> None:
    """Targets can key dicts (one tracker per target) although endpoints/options are mappings."""
    target = TargetConfig.model_validate({"service": "s3", "endpoints": {"x": "http://h"}, "options": {"path": "/"}})
    assert {target: 1}[TargetConfig.model_validate({"service": "s3", "endpoints": {"x": "http://h"},
                                                    "options": {"path": "/"}})] == 1
    assert hash(Config()) == hash(Config())


# --- targets ------------------------------------------------------------------------------------------------------


def test_explicit_endpoints_add_and_replace_regions(tmp_path: Path) -> None:
    path = write(tmp_path, """
targets:
  - service: bedrock-runtime
    regions: [us-west-2, us-east-1]
    endpoints:
      us-east-1: https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com
      sim-slow: http://127.0.0.1:8443
""")
    (target,) = load_targets(path, env={}).targets
    assert target.regions == ("us-west-2", "us-east-1", "sim-slow")  # list order, then endpoint-only regions
    assert target.endpoint_for("us-west-2") == "https://bedrock-runtime.us-west-2.amazonaws.com"
    assert target.endpoint_for("us-east-1") == "https://vpce-0abc.bedrock-runtime.us-east-1.vpce.amazonaws.com"
    assert target.endpoint_for("sim-slow") == "http://127.0.0.1:8443"
    probes = list(target.probe_targets().values())
    assert [(p.service, p.region, p.url) for p in probes][2] == ("bedrock-runtime", "sim-slow", "http://127.0.0.1:8443")
    assert probes[2].options is target.config.options  # typed, validated once: every region shares it


def test_auto_regions_with_excludes_and_extra_endpoint() -> None:
    target = resolved({
        "service": "bedrock-runtime", "exclude_regions": ["us-east-1", "us-west-1"],
        "endpoints": {"local": "http://127.0.0.1:9"}, "options": {"path": "/ping"},
    })
    expected = [r for r in regions.available_regions("bedrock-runtime") if r != "us-east-1"] + ["local"]
    assert list(target.regions) == expected
    assert target.probe_targets()[expected[0]].options == HttpsOptions(path="/ping")


def test_a_service_botocore_lists_no_regions_for_can_be_given_regions() -> None:
    target = resolved({"service": "bedrock-agent-runtime", "regions": ["eu-west-1"]})
    assert target.endpoint_for("eu-west-1") == "https://bedrock-agent-runtime.eu-west-1.amazonaws.com"


def test_fips_dualstack_and_other_partitions() -> None:
    fips = resolved({"service": "bedrock-runtime", "regions": ["us-east-1"], "fips": True})
    assert fips.endpoint_for("us-east-1") == "https://bedrock-runtime-fips.us-east-1.amazonaws.com"
    gov = resolved({"service": "bedrock-runtime", "partition": "aws-us-gov"})
    assert gov.regions == ("us-gov-east-1", "us-gov-west-1")
    cn = resolved({"service": "s3", "partition": "aws-cn", "probe": "tcp"})
    assert cn.endpoint_for("cn-north-1") == "https://s3.cn-north-1.amazonaws.com.cn"
    assert cn.name == "s3-tcp"


# --- durations and listen -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1h", 3600.0), ("1m30s", 90.0), ("0.25s", 0.25), ("30", 30.0),
    ("2.5", 2.5), (30, 30.0), (2.5, 2.5), (" 10s ", 10.0), (".5s", 0.5),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["abc", "5x", "", "ms", "1.2.3s", "5 s", "-1s", -1, True, None, float("nan"),
                                  float("inf"), "1s 2s"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*\(use e\.g\. 500ms, 30s, 1m\)"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (5.0, "5s"), (60.0, "1m"), (90.0, "90s"),
                                               (3600.0, "1h"), (1.5, "1.5s"), (0.0005, "0.0005s")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("listen", "address"), [
    (":9720", ("0.0.0.0", 9720)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("localhost:80", ("localhost", 80)),
    ("[::1]:9720", ("::1", 9720)), ("[::]:9720", ("::", 9720)), ("0.0.0.0:65535", ("0.0.0.0", 65535)),
])
def test_parse_listen(listen: str, address: tuple[str, int]) -> None:
    assert parse_listen(listen) == address


@pytest.mark.parametrize("listen", ["9720", "abc", ":", ":99999", "host:port", "::1:9720", "[]:80", "a b:80",
                                    ":-1", ""])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen(listen)


def test_listen_may_be_a_bare_port_in_yaml(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "listen: 9721\n"), env={}).listen_address == ("0.0.0.0", 9721)


# --- errors: one line, naming the file, the field and the problem ------------------------------------------------

T = "targets:\n  - service: bedrock-runtime\n"

ERRORS = [
    (T + "    interval: abc\n", "targets[0].interval", "invalid duration 'abc' (use e.g. 500ms, 30s, 1m)"),
    (T + "    timeout: 0\n", "targets[0].timeout", "must be greater than zero"),
    (T + "    interval: 5s\n    timeout: 5s\n", "targets[0].timeout",
     "timeout (5s) must be shorter than interval (5s)"),
    (T + "    intervall: 5s\n", "targets[0].intervall", "unknown key (did you mean 'interval'?)"),
    ("listn: ':1'\n", "listn", "unknown key (did you mean 'listen'?)"),
    ("cache: {type: file, pth: /tmp/x}\n", "cache.pth", "unknown key (did you mean 'path'?)"),
    ("zzz: 1\n", "zzz", "unknown key (known keys: listen, cache, concurrency"),
    (T + "  - service: bedrock-runtime\n", "targets[1].name", "duplicate target name 'bedrock-runtime-https'"),
    (T + "    probe: icmp\n", "targets[0].probe", "unknown probe kind 'icmp' (use api, https, tcp)"),
    ("targets: []\n", "targets", "no targets"),
    ("targets:\n", "targets", "no targets"),
    ("targets:\n  - service: bedrok-runtime\n", "targets[0].service",
     "unknown service 'bedrok-runtime': botocore has no model for it (did you mean bedrock-runtime"),
    ("targets:\n  - probe: tcp\n", "targets[0].service", "required field is missing"),
    (T + "    partition: awz\n", "targets[0].partition", "unknown partition 'awz' (known: aws, aws-cn"),
    (T + "    endpoints: {us-east-1: 'ftp://x'}\n", "targets[0].endpoints.us-east-1",
     "invalid endpoint URL 'ftp://x' (must be http:// or https://)"),
    (T + "    endpoints: {us-east-1: 'vpce.example.com'}\n", "targets[0].endpoints.us-east-1", "invalid endpoint URL"),
    (T + "    endpoints: [us-east-1]\n", "targets[0].endpoints", "endpoints must be a mapping"),
    (T + "    endpoints: {US_EAST: 'http://x'}\n", "targets[0].endpoints.US_EAST", "invalid region name 'US_EAST'"),
    ("listen: abc\n", "listen", "invalid listen address 'abc' (use host:port"),
    ("listen: '[::1]'\n", "listen", "invalid listen address"),
    (T + "    regions: [us-east1]\n", "targets[0].regions[0]", "unknown region 'us-east1' in partition 'aws'; "
                                                              "did you mean us-east-1"),
    (T + "    regions: [cn-north-1]\n", "targets[0].regions[0]", "region 'cn-north-1' is in partition 'aws-cn'"),
    (T + "    regions: [us-east-1, us-east-1]\n", "targets[0].regions[1]", "region 'us-east-1' is listed twice"),
    (T + "    regions: us-east-1\n", "targets[0].regions", "regions must be 'auto' or a list of region names"),
    (T + "    regions: []\n", "targets[0].regions", "no regions left to probe"),
    (T + "    exclude_regions: [us-east-7]\n", "targets[0].exclude_regions[0]", "unknown region 'us-east-7'"),
    ("targets:\n  - service: bedrock-agent-runtime\n", "targets[0].regions",
     "botocore knows no regions for 'bedrock-agent-runtime' in partition 'aws'"),
    ("targets:\n  - {service: s3, partition: aws-cn, fips: true}\n", "targets[0].fips",
     "Partition does not support FIPS"),
    (T + "    name: 'a b'\n", "targets[0].name", "invalid target name 'a b'"),
    ("concurrency: 0\n", "concurrency", "must be >= 1 (got 0)"),
    ("concurrency: many\n", "concurrency", "must be a whole number (got 'many')"),
    ("concurrency: true\n", "concurrency", "whole number"),
    ("log_level: loud\n", "log_level", "unknown log level 'loud' (use debug, info"),
    ("cache: {type: memcached}\n", "cache.type", "unknown cache type 'memcached' (use file, redis or none)"),
    ("cache: {type: redis, url: 'http://x'}\n", "cache.url", "invalid redis URL 'http://x'"),
]


@pytest.mark.parametrize(("text", "field", "problem"), ERRORS, ids=[e[1] + ":" + e[2][:20] for e in ERRORS])
def test_errors_are_one_line_naming_file_field_and_problem(tmp_path: Path, text: str, field: str,
                                                           problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_targets(path, env={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message
    assert (caught.value.source, caught.value.field) == (str(path), field)


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("targets:\n  - {service: bedrock-runtime\n", ":3:1", "invalid YAML: expected ',' or '}'"),
    ("listen: ':1'\n  bad: indent\n", ":2:3", "invalid YAML: expected <block end>"),
    ("a: b: c\n", ":1:5", "invalid YAML: mapping values are not allowed here"),
    ("listen: ':1'\nlisten: ':2'\n", ":2:1", "invalid YAML: duplicate key 'listen'"),
    ("- a\n- b\n", "", "the top level must be a mapping"),
])
def test_yaml_errors_name_line_and_column(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}{where}: {problem}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file or directory$"):
        load_config(tmp_path / "nope.yaml", env={})


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 0\nlog_level: loud\nlisten: x\n")
    with pytest.raises(ConfigError, match=r"\(and 2 more problems\)$"):
        load_config(path, env={})


# --- precedence: file < env < CLI ---------------------------------------------------------------------------------

FILE = """
listen: "127.0.0.1:1111"
cache: {type: file, path: /tmp/from-file.json}
concurrency: 2
log_level: warning
"""


def test_env_overrides_file_and_cli_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    assert load_config(path, env={}).listen == "127.0.0.1:1111"
    env = {"REGION_LATENCY_LISTEN": "127.0.0.1:2222", "REGION_LATENCY_CONCURRENCY": "7",
           "REGION_LATENCY_LOG_LEVEL": "DEBUG", "REGION_LATENCY_CACHE_PATH": "/tmp/from-env.json"}
    config = load_config(path, env=env)
    assert (config.listen, config.concurrency, config.log_level) == ("127.0.0.1:2222", 7, "debug")
    assert config.cache.path == Path("/tmp/from-env.json")
    config = load_config(path, env=env, overrides={"listen": "127.0.0.1:0", "cache_path": "/tmp/from-cli.json",
                                                   "concurrency": None})
    assert config.listen_address == ("127.0.0.1", 0)
    assert config.cache.path == Path("/tmp/from-cli.json")
    assert config.concurrency == 7  # a None override (flag not given) leaves the env value


def test_cache_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "cache: none\n")
    assert load_config(path, env={}).cache.type == "none"
    config = load_config(path, env={"REGION_LATENCY_CACHE": "redis", "REGION_LATENCY_REDIS_URL": "redis://r:6379/1"})
    assert (config.cache.type, config.cache.url) == ("redis", "redis://r:6379/1")
    config = load_config(path, env={}, overrides={"cache": "file", "cache_path": "~/x.json"})
    assert config.cache.type == "file" and config.cache.path == Path("~/x.json").expanduser()


def test_empty_env_values_are_ignored(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FILE), env={"REGION_LATENCY_LISTEN": ""}).listen == "127.0.0.1:1111"


def test_override_errors_name_the_env_var_or_flag(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    with pytest.raises(ConfigError, match=r"^REGION_LATENCY_CONCURRENCY: concurrency: must be a whole number \(got 'l"):
        load_config(path, env={"REGION_LATENCY_CONCURRENCY": "lots"})
    with pytest.raises(ConfigError, match=r"^REGION_LATENCY_CACHE: cache\.type: unknown cache type 'memcached'"):
        load_config(path, env={"REGION_LATENCY_CACHE": "memcached"})
    with pytest.raises(ConfigError, match=r"^--listen: listen: invalid listen address 'nope'"):
        load_config(path, env={"REGION_LATENCY_LISTEN": "nope2"}, overrides={"listen": "nope"})
    with pytest.raises(ConfigError, match=r"^overrides: port: unknown override"):
        load_config(path, env={}, overrides={"port": 1})


def test_no_file_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION_LATENCY_LISTEN", "127.0.0.1:3333")
    monkeypatch.delenv("REGION_LATENCY_CONFIG", raising=False)
    assert load_config().listen == "127.0.0.1:3333"  # env defaults to os.environ


# --- dump ---------------------------------------------------------------------------------------------------------


def test_dump_round_trips(tmp_path: Path) -> None:
    loaded = load_targets(EXAMPLE, env={})
    config = loaded.config
    text = config.dump()
    assert "interval: 30s" in text
    assert load_config(write(tmp_path, text), env={}) == config
    spelled_out = loaded.dump()
    again = load_targets(write(tmp_path, spelled_out), env={})
    assert [t.regions for t in again.targets] == [t.regions for t in loaded.targets]
    assert "regions: auto" not in spelled_out


def test_ranking_settings_are_typed_and_validated_at_load_time(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "ranking: {policy: trusted, max_failures: 3, ttl: 2m}\n"), env={})
    assert config.ranking == RankingSettings(policy="trusted", max_failures=3, ttl=120.0)
    assert "ranking:\n  policy: trusted\n  max_failures: 3\n  ttl: 120.0\n" in config.dump()  # what was given
    assert load_config(write(tmp_path, "ranking:\n"), env={}).ranking == RankingSettings()


T2 = T + "    name: a\n  - {service: bedrock-runtime, name: b, interval: 1m}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("ranking: {policy: ema}\n", "ranking.policy: must be one of 'trusted' or 'plain'"),
    ("ranking: {hysteresis: 0.1}\n", "ranking.hysteresis: unknown key (known keys: policy, max_failures, ttl,"),
    ("ranking: {max_failures: 0}\n", "ranking.max_failures: must be >= 1"),
    ("ranking: {min_samples: 1.5}\n", "ranking.min_samples: must be a whole number"),
    ("ranking: {margin_relative: 1}\n", "ranking.margin_relative: must be < 1"),
    ("ranking: {margin_absolute: -2ms}\n", "ranking.margin_absolute: invalid duration '-2ms'"),
    ("ranking: {ttl: .nan}\n", "ranking.ttl: must be a finite number"),
    ("ranking: {leader_yields_on_failure: maybe}\n", "ranking.leader_yields_on_failure: must be true or false"),
    ("ranking: 5\n", "ranking: must be a mapping, got int"),
    ("ranking: {ttl: 10s}\n", "ranking.ttl: must be a finite time > the probe interval (30s) (target "
                               "bedrock-runtime-https, interval 30s)"),
    ("ranking: {max_ejection: 10s}\n", "ranking.max_ejection: must be a finite time >= base_ejection"),
    ("ranking: {base_ejection: 1m, max_ejection: 30s}\n", "ranking.max_ejection: must be a finite time >= "
                                                          "base_ejection"),
    (T2 + "ranking: {ttl: 45s}\n", "ranking.ttl: must be a finite time > the probe interval (60s) (target b, "
                                   "interval 1m)"),
])
def test_bad_ranking_settings_are_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}: {message}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_plain_ranking_ignores_the_trusted_time_limits(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "ranking: {policy: plain, ttl: 10s}\n"), env={})
    assert config.ranking.policy == "plain"


def test_every_yaml_example_in_the_docs_loads(tmp_path: Path) -> None:
    """docs/CONFIG.md's examples are real configurations (the schema block included)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 5
    ca_file = tmp_path / "test-ca.pem"  # the examples' CA bundle must exist: it is loaded at config time
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    for block in blocks:
        load_targets(write(tmp_path, block.replace("/tmp/test-ca.pem", str(ca_file))), env={})


def test_from_validation_for_models_built_in_code() -> None:
    """The CLI builds a TargetConfig from flags: its errors read like the file's."""
    with pytest.raises(ValidationError) as caught:
        TargetConfig.model_validate({"service": "bedrock-runtime", "regions": ["US-EAST-1"]})
    error = ConfigError.from_validation(caught.value, source="flags")
    assert str(error).startswith("flags: regions[0]: invalid region name 'US-EAST-1'")


# --- probe options are checked at load time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "options", "message"),
    [
        ("https", {"ca-file": "/x.pem"}, "unknown https probe option(s) 'ca-file'"),
        ("https", {"path": "no-slash"}, "'path' must be a string starting with '/'"),
        ("tcp", {"ip_version": 5}, "ip_version"),
        ("api", {"operation": 3}, "api option 'operation' must be an API operation name, got 3"),
        ("api", {"verify": False, "ca_file": "/x.pem"}, "give only one of the api options 'verify', 'ca_file'"),
        ("https", {"insecure": "yes"}, "https option 'insecure' must be true or false, got 'yes'"),
        ("https", {"ca_file": "/nonexistent.pem"}, "cannot load CA bundle '/nonexistent.pem'"),
        ("tcp", {"port": 70000}, "port must be an integer in 1..65535, got 70000"),
    ],
)
def test_bad_probe_options_fail_at_load_time(tmp_path: Path, probe: str, options: dict[str, Any],
                                             message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"service": "bedrock", "probe": probe, "regions": ["us-east-1"],
                                                 "options": options}]}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})  # the schema alone: no botocore, no per-region check needed
    text = str(info.value)
    assert text.startswith(f"{path}: targets[0].options: ") and message in text and "\n" not in text


def test_options_that_do_not_fit_the_service_are_blamed_on_options_without_a_misleading_region(
        tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"service": "bedrock", "probe": "api", "regions": [],
                                                 "endpoints": {"local-1": "http://127.0.0.1:1"},
                                                 "options": {"operation": "ListFoundationModels"}},
                                                {"service": "s3", "probe": "api", "regions": [],
                                                 "endpoints": {"local-2": "http://127.0.0.1:1"}}]}))
    load_config(path, env={})
    with pytest.raises(ConfigError) as info:
        load_targets(path, env={})
    assert str(info.value) == (f"{path}: targets[1].options: api probe for service 's3' needs options['operation'] "
                               "(defaults exist only for bedrock: ListFoundationModels, bedrock-runtime: "
                               "ListAsyncInvokes)")


def test_a_bad_port_in_an_endpoint_url_is_blamed_on_that_endpoint_not_on_options(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"service": "s3", "regions": [],
                                                 "endpoints": {"us-east-1": "https://h:99999/"}}]}))
    with pytest.raises(ConfigError) as info:
        load_targets(path, env={})
    assert str(info.value) == (f"{path}: targets[0].endpoints.us-east-1: "
                               "endpoint URL 'https://h:99999/' has an invalid port")
