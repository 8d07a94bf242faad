"""The `otlp:` section and the standard OTEL_* environment variables: one test per variable that matters, end to
end (a real export to a local receiver) where the variable changes what goes over the wire."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from region_latency.cli import cli
from region_latency.config import Config, ConfigError, load_config
from region_latency.export.otel import OtlpExporter
from region_latency.otlp_config import OtlpConfig
from region_latency.probes.base import ProbeResult
from region_latency.state import TargetInfo, TargetSnapshot, TargetState
from region_latency.tracker import RegionLatencyTracker
from tests.support.otlp_receiver import OtlpReceiver, Received

SECRET = "Bearer s3cr3t-t0ken"
SECRET_ENV = "Bearer%20s3cr3t-t0ken"


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test gives: nothing from the environment the tests run in."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_") or name.startswith("REGION_LATENCY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def otlp(env: Mapping[str, str], text: str | None = None, tmp_path: Path | None = None) -> OtlpConfig:
    if text is None:
        return load_config(env=env).otlp
    assert tmp_path is not None
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env=env).otlp


def one_state() -> TargetState:
    state = TargetState(TargetInfo("t", "bedrock-runtime", "https"), ["eu-west-1"], RegionLatencyTracker())
    state.record("eu-west-1", ProbeResult(latency=0.012, phases={"ttfb": 0.012}, status=403))
    return state


def export_once(config: OtlpConfig, count: int = 1, receiver: OtlpReceiver | None = None) -> Received:
    state = one_state()

    def snapshots() -> list[TargetSnapshot]:
        return [state.snapshot()]

    pushing = OtlpExporter(config, snapshots)
    pushing.start()
    try:
        assert pushing.collect_now(), pushing.status
    finally:
        pushing.stop()
    assert receiver is not None
    return receiver.wait_for(count)[0]


# --- off by default; what turns it on -----------------------------------------------------------------------------

def test_off_by_default() -> None:
    config = Config()
    assert not config.otlp.active
    assert not otlp({}).active


def test_otel_exporter_otlp_endpoint_turns_it_on_and_gets_v1_metrics(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url + "/"})
    assert config.active and config.url == f"{receiver.url}/v1/metrics"
    assert export_once(config, receiver=receiver).path == "/v1/metrics"


def test_otel_exporter_otlp_metrics_endpoint_is_used_as_is_and_wins(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                   "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{receiver.url}/custom/metrics"})
    assert config.active
    assert export_once(config, receiver=receiver).path == "/custom/metrics"


def test_an_endpoint_in_the_file_turns_it_on_and_enabled_false_keeps_it_off(tmp_path: Path) -> None:
    assert otlp({}, "otlp: {endpoint: 'http://collector:4318'}\n", tmp_path).active
    assert otlp({}, "otlp: {enabled: true}\n", tmp_path).url == "http://localhost:4318/v1/metrics"
    off = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp: {enabled: false}\n", tmp_path)
    assert not off.active


def test_otel_sdk_disabled_turns_it_off() -> None:
    assert not otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}).active


# --- one variable each ---------------------------------------------------------------------------------------------

def test_otel_exporter_otlp_headers_are_sent(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                   "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={SECRET_ENV},x-scope-orgid=team-a",
                   "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-scope-orgid=team-b"})
    headers = export_once(config, receiver=receiver).headers
    assert headers["authorization"] == SECRET
    assert headers["x-scope-orgid"] == "team-b"  # the metrics-specific variable wins, key by key


def test_headers_merge_over_the_file_and_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "otlp:\n  endpoint: http://127.0.0.1:1\n  timeout: 500ms\n  headers: {x-file: file-secret}\n"
    config = otlp({"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={SECRET_ENV}"}, text, tmp_path)
    assert config.header_values() == {"x-file": "file-secret", "authorization": SECRET}
    shown = repr(config) + str(config) + Config(otlp=config).dump()
    assert SECRET not in shown and "file-secret" not in shown
    caplog.set_level(logging.DEBUG)
    pushing = OtlpExporter(config, lambda: [one_state().snapshot()])
    pushing.start()
    pushing.collect_now()
    pushing.stop()
    assert caplog.records  # it did log (the failure) ...
    logged = "".join(record.getMessage() for record in caplog.records)
    assert SECRET not in logged and "file-secret" not in logged  # ... but never a header value


def test_a_malformed_headers_variable_is_one_line_without_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        otlp({"OTEL_EXPORTER_OTLP_HEADERS": f"x-ok=1,Authorization {SECRET}"})
    assert str(caught.value) == "OTEL_EXPORTER_OTLP_HEADERS: otlp.headers: entry 2 is not key=value"


def test_check_config_hides_header_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("cache: none\ntargets: [{name: t, service: bedrock-runtime, regions: [], "
                    "endpoints: {eu-west-1: 'https://127.0.0.1:1'}}]\n")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={SECRET_ENV}")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(path)], prog_name="region-latency-exporter")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and "s3cr3t" not in result.output
    assert "authorization: '**********'" in result.stdout
    assert ("# otlp: http/protobuf to http://collector:4318/v1/metrics every 60s, timeout 10s, headers "
            "authorization (values hidden)") in result.stderr.splitlines()


def test_otel_exporter_otlp_protocol() -> None:
    assert otlp({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).protocol == "http/protobuf"
    with pytest.raises(ConfigError) as caught:
        otlp({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert str(caught.value) == ("OTEL_EXPORTER_OTLP_PROTOCOL: otlp.protocol: http/json is not supported by the "
                                 "Python OTLP exporter (use http/protobuf or grpc)")
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: otlp.protocol: unknown protocol"):
        otlp({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"})


def test_otel_resource_attributes_and_service_name(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                   "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,k8s.pod.name=exporter%2D0,"
                                               "service.name=from-attributes,service.instance.id=pod-0"})
    resource = export_once(config, receiver=receiver).resource()
    assert resource["deployment.environment"] == "prod"
    assert resource["k8s.pod.name"] == "exporter-0"  # percent-decoded
    assert resource["service.name"] == "from-attributes"  # no OTEL_SERVICE_NAME: the attribute counts
    assert resource["service.instance.id"] == "pod-0"
    assert resource["service.version"]


def test_otel_service_name_wins_over_the_attribute(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "latency-eu",
                   "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes"})
    assert export_once(config, receiver=receiver).resource()["service.name"] == "latency-eu"


def test_the_vantage_point(receiver: OtlpReceiver, tmp_path: Path) -> None:
    assert otlp({}, "otlp: {vantage: office-berlin}\n", tmp_path).vantage == "office-berlin"
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "REGION_LATENCY_VANTAGE": "eu-central-1a"},
                  "otlp: {vantage: office-berlin}\n", tmp_path)
    assert export_once(config, receiver=receiver).resource()["vantage"] == "eu-central-1a"  # env over file


def test_otel_metric_export_interval_is_milliseconds(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_METRIC_EXPORT_INTERVAL": "200"})
    assert config.interval == 0.2
    pushing = OtlpExporter(config, lambda: [one_state().snapshot()])
    pushing.start()
    try:
        receiver.wait_for(3)  # on its own schedule, no collect_now
    finally:
        pushing.stop()


@pytest.mark.parametrize("name", ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"])
def test_otel_exporter_otlp_timeout_is_milliseconds(name: str) -> None:
    """Milliseconds, as the OTel specification says (the Python SDK alone reads seconds)."""
    assert otlp({name: "2500"}).timeout == 2.5
    with pytest.raises(ConfigError, match=rf"^{name}: otlp.timeout: invalid duration"):
        otlp({name: "soon"})


def test_otel_exporter_otlp_compression(receiver: OtlpReceiver) -> None:
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    assert export_once(config, receiver=receiver).headers["content-encoding"] == "gzip"


def test_env_overrides_the_file_and_errors_name_the_variable(tmp_path: Path) -> None:
    text = "otlp: {endpoint: 'http://file:4318', interval: 30s}\n"
    config = otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}, text, tmp_path)
    assert (config.url, config.interval) == ("http://env:4318/v1/metrics", 30.0)
    with pytest.raises(ConfigError) as caught:
        otlp({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, text, tmp_path)
    assert str(caught.value) == "OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint: must be an http:// or https:// URL"


@pytest.mark.parametrize(("text", "message"), [
    ("otlp: {endpont: x}\n", "otlp.endpont: unknown key (did you mean 'endpoint'?)"),
    ("otlp: {interval: 0s}\n", "otlp.interval: must be greater than zero (got '0s')"),
    ("otlp: {histogram: linear}\n", "otlp.histogram: must be one of 'exponential' or 'explicit' (got 'linear')"),
    ("otlp: {endpoint: 'http://user:pw@collector:4318'}\n",
     "otlp.endpoint: a password in the URL would be shown and logged: put credentials under headers"),
    ("otlp: {headers: {'bad header': x}}\n", "otlp.headers: invalid header name 'bad header'"),
    ("otlp: {headers: {authorization: [s3cr3t]}}\n",
     "otlp.headers: header 'authorization': the value must be one line of text"),
    ("otlp: [a]\n", "otlp: Input should be a valid dictionary or instance of OtlpConfig (got ...)"),
])
def test_file_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        otlp({}, text, tmp_path)
    got = str(caught.value)
    assert got.startswith(f"{tmp_path / 'config.yaml'}: "), got
    expected = message.split(" (got ...)", maxsplit=1)[0]
    assert got.removeprefix(f"{tmp_path / 'config.yaml'}: ").startswith(expected), got
    assert "s3cr3t" not in got and "\n" not in got
