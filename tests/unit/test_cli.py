"""cli.py in-process (click's CliRunner): outputs, exit codes (0 ok, 2 bad input, 1 runtime failure) and
one-line errors for `regions`, `check-config`, `probe` and `serve`'s failures before it serves."""

from __future__ import annotations

import json
import platform
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from region_latency import __version__
from region_latency.cli import cli
from region_latency.regions import available_regions
from tests.support.servers import ServerGroup


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config from the environment; the default cache path under a home of the test's own."""
    for name in ("REGION_LATENCY_CONFIG", "REGION_LATENCY_LISTEN", "REGION_LATENCY_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="region-latency-exporter")


def one_line_error(result: Result, code: int = 2) -> str:
    """The failure is exactly one `error: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0][len("error: "):]


def test_version_and_help() -> None:
    lines = run("--version").stdout.splitlines()
    assert lines[0] == f"region-latency-exporter, version {__version__}"
    assert lines[1].split()[:2] == ["python:", platform.python_version()]
    assert lines[2].startswith(f"  platform: {platform.system().lower()}/{platform.machine()}")
    assert run("serve", "--version").stdout.splitlines() == lines
    result = run("--help")
    assert result.exit_code == 0
    for command in ("serve", "probe", "regions", "check-config", "demo"):
        assert command in result.stdout


# --- regions ------------------------------------------------------------------------------------------------------


def test_regions_table_lists_botocores_regions_and_urls() -> None:
    result = run("regions", "bedrock-runtime")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == available_regions("bedrock-runtime")
    assert ["us-east-1", "https://bedrock-runtime.us-east-1.amazonaws.com"] in rows
    assert result.stdout.splitlines()[0].index("https://") == 19  # region padded to 18 columns


def test_regions_json() -> None:
    result = run("regions", "bedrock-runtime", "--partition", "aws-us-gov", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"service": "bedrock-runtime", "partition": "aws-us-gov", "regions": [
        {"region": "us-gov-east-1", "url": "https://bedrock-runtime.us-gov-east-1.amazonaws.com"},
        {"region": "us-gov-west-1", "url": "https://bedrock-runtime.us-gov-west-1.amazonaws.com"},
    ]}


def test_regions_none_known_says_so_on_stderr() -> None:
    result = run("regions", "bedrock-runtime", "--partition", "aws-cn")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "botocore knows no aws-cn regions for bedrock-runtime\n"


@pytest.mark.parametrize(("args", "problem"), [
    (("bedrok-runtime",), "unknown service 'bedrok-runtime': botocore has no model for it (did you mean "),
    (("s3", "--partition", "awz"), "unknown partition 'awz' (known: aws, aws-cn"),
])
def test_regions_errors_are_one_line(args: tuple[str, ...], problem: str) -> None:
    assert one_line_error(run("regions", *args)).startswith(problem)


# --- check-config -------------------------------------------------------------------------------------------------

CONFIG = """
listen: "127.0.0.1:9999"
cache: none
targets:
  - name: local
    service: bedrock-runtime
    probe: tcp
    regions: [eu-west-1]
    endpoints: {sim-1: "http://127.0.0.1:1"}
    interval: 10s
    timeout: 2s
"""


def test_check_config_prints_the_effective_config_that_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    result = run("check-config", "--config", str(path))
    assert result.exit_code == 0, result.stderr
    dumped = yaml.safe_load(result.stdout)
    assert dumped["targets"][0]["regions"] == ["eu-west-1", "sim-1"] and dumped["targets"][0]["interval"] == "10s"
    again = tmp_path / "again.yaml"
    again.write_text(result.stdout)
    assert run("check-config", "--config", str(again)).stdout == result.stdout  # a fixed point
    assert result.stderr.splitlines() == [
        "# target local: bedrock-runtime via tcp, 2 region(s), every 10s, timeout 2s",
        "configuration OK",
    ]


def test_check_config_reads_the_env_path_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("REGION_LATENCY_CONFIG", str(path))
    assert run("check-config").stderr.startswith("# target local:")
    monkeypatch.delenv("REGION_LATENCY_CONFIG")
    result = run("check-config")
    assert result.exit_code == 0
    assert result.stderr.startswith("# target bedrock-runtime-https: bedrock-runtime via https, ")


@pytest.mark.parametrize(("text", "message"), [
    ("targets: [{service: bedrok-runtime}]\n", "{path}: targets[0].service: unknown service 'bedrok-runtime'"),
    ("a: b: c\n", "{path}:1:5: invalid YAML: mapping values are not allowed here"),
    ("ranking: {max_failures: 0}\n", "{path}: ranking.max_failures: must be >= 1"),
    ("targets: [{service: bedrock, probe: https, regions: [us-east-1], options: {ca-file: x}}]\n",
     "{path}: targets[0].options: unknown https probe option(s) 'ca-file'"),
])
def test_check_config_errors_are_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert one_line_error(run("check-config", "--config", str(path))).startswith(message.format(path=path))


def test_check_config_missing_file(tmp_path: Path) -> None:
    error = one_line_error(run("check-config", "--config", str(tmp_path / "nope.yaml")))
    assert error == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


# --- probe --------------------------------------------------------------------------------------------------------


def test_probe_ranks_explicit_endpoints_as_json_and_exits_1_naming_a_region_whose_every_probe_failed(
        local_servers: ServerGroup) -> None:
    up = local_servers.tcp()
    with socket.socket() as closed:  # a port nobody listens on: refused
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    result = run("probe", "--service", "bedrock-runtime", "--probe", "tcp", "-n", "2", "--json", "--timeout", "2",
                 "--region", "dead-1", "--region", "up-1",
                 "--endpoint", f"up-1=http://127.0.0.1:{up.port}", "--endpoint", f"dead-1=http://127.0.0.1:{dead_port}")
    assert result.exit_code == 1, result.stderr  # the report is printed, and scripts see the dead region
    (error,) = result.stderr.splitlines()
    assert error.startswith("error: every probe failed in 1 region(s): bedrock-runtime-tcp/dead-1 (refused: ")
    assert "up-1" not in error
    (entry,) = json.loads(result.stdout)["targets"]
    assert (entry["name"], entry["service"], entry["probe"]) == ("bedrock-runtime-tcp", "bedrock-runtime", "tcp")
    first, second = entry["regions"]
    assert (first["rank"], first["region"], first["ok"], first["errors"]) == (1, "up-1", 2, 0)
    assert first["median_seconds"] > 0 and first["url"] == f"http://127.0.0.1:{up.port}"
    assert (second["rank"], second["region"], second["ok"], second["errors"]) == (None, "dead-1", 0, 2)
    assert second["last_error"].startswith("refused: ")


def test_probe_table_from_a_config_file(tmp_path: Path, local_servers: ServerGroup) -> None:
    up = local_servers.tcp()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"targets": [{
        "name": "mine", "service": "bedrock-runtime", "probe": "tcp", "regions": [],
        "endpoints": {"up-1": f"http://127.0.0.1:{up.port}"}, "interval": "10s", "timeout": "2s"}]}))
    result = run("probe", "--config", str(path), "-n", "1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "mine (bedrock-runtime, tcp probe)"
    assert lines[1].split() == ["rank", "region", "median", "ema", "ok", "err", "last", "error"]
    assert lines[2].split()[:2] == ["1", "up-1"] and lines[2].split()[-2:] == ["1", "0"]


@pytest.mark.parametrize(("args", "message"), [
    (("--service", "bedrock-runtime", "--endpoint", "nourl"), "--endpoint takes REGION=URL, got 'nourl'"),
    (("--region", "us-east-1",), "--region and --endpoint need --service (or put them in the config file)"),
    (("--service", "bedrock-runtime", "--region", "us-east1"), "flags: regions[0]: unknown region 'us-east1'"),
    (("--service", "bedrock-runtime", "--endpoint", "x=ftp://h"), "flags: endpoints.x: invalid endpoint URL"),
    (("--service", "bedrok-runtime",), "flags: service: unknown service 'bedrok-runtime'"),
])
def test_probe_flag_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    assert one_line_error(run("probe", *args)).startswith(message)


# --- serve: what fails before it serves ---------------------------------------------------------------------------


def test_serve_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("targets: [{service: s3, regions: [us-east1]}]\n")
    error = one_line_error(run("serve", "--config", str(path)))
    assert error.startswith(f"{path}: targets[0].regions[0]: unknown region 'us-east1'")
    error = one_line_error(run("serve", "--config", str(tmp_path / "config.yaml"), "--listen", "nope"))
    assert error.startswith("--listen: listen: invalid listen address 'nope'")


def test_serve_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_line_error(run("serve", "--config", str(path), "--listen", f"127.0.0.1:{port}"), code=1)
    assert error.startswith(f"cannot listen on 127.0.0.1:{port}: ")


# --- issue 11: operator conventions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("check-config",), ("probe",), ("serve", "--listen", "127.0.0.1:0")])
@pytest.mark.parametrize("flag", ["--config", "--config.file"])
def test_a_directory_as_the_config_is_one_line_not_a_usage_screen(tmp_path: Path, command: tuple[str, ...],
                                                                  flag: str) -> None:
    assert one_line_error(run(*command, flag, str(tmp_path))) == f"{tmp_path}: cannot read: Is a directory"


def test_check_config_redacts_the_redis_password(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("cache: none", "cache: {type: redis, url: 'redis://user:PASSWORD-7f3a@localhost:6379/0'}"))
    result = run("check-config", "--config.file", str(path))
    assert result.exit_code == 0, result.stderr
    assert "PASSWORD-7f3a" not in result.output
    assert yaml.safe_load(result.stdout)["cache"]["url"] == "redis://user:xxxxx@localhost:6379/0"


def _web_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_check_config_validates_the_web_config_without_printing_secrets(tmp_path: Path) -> None:
    import bcrypt
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    secret_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = _web_config(tmp_path, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
                                f"basic_auth_users: {{operator-name-91c2: '{secret_hash}'}}\n")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    result = run("check-config", "--config", str(config), "--web.config.file", str(web))
    assert result.exit_code == 0, result.stderr
    assert "# web config " + str(web) + ": TLS on, TLS12-TLS13, client certificates: NoClientCert, " \
           "basic auth: 1 user(s)" in result.stderr.splitlines()
    for secret in ("operator-name-91c2", secret_hash, "PRIVATE KEY"):
        assert secret not in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("basic_auth_users: {a: notahash}\n", "basic_auth_users"),
    ("tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n", "missing.crt"),
    ("tls_server_config: [\n", "invalid YAML"),
])
@pytest.mark.parametrize("command", [("check-config",), ("serve", "--listen", "127.0.0.1:0")])
def test_a_bad_web_config_is_one_line_exit_2(tmp_path: Path, text: str, message: str,
                                             command: tuple[str, ...]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    web = _web_config(tmp_path, text)
    error = one_line_error(run(*command, "--config", str(config), "--web.config.file", str(web)))
    assert error.startswith("--web.config.file: ") and message in error, error


def test_serve_refuses_a_telemetry_path_that_hides_another_endpoint(tmp_path: Path) -> None:
    error = one_line_error(run("serve", "--web.telemetry-path", "/-/reload"))
    assert error.startswith("--web.telemetry-path must start with / ")
