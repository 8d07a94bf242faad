"""The probe-kind registry: one static table, typed options validated once, no botocore for tcp/https."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel

from region_latency.probes import PROBE_KINDS, ProbeOptions, Target, check_target, get_probe, probe_kind
from region_latency.probes.api import ApiOptions
from region_latency.probes.base import TlsOptions
from region_latency.probes.https import HttpsOptions
from region_latency.probes.tcp import TcpOptions
from tests.support.servers import ServerGroup


def test_the_table() -> None:
    assert sorted(PROBE_KINDS) == ["api", "https", "tcp"]
    for name, kind in PROBE_KINDS.items():
        assert kind.name == name and kind.options_model.kind == name
        assert issubclass(kind.options_model, ProbeOptions)
        assert get_probe(name) is kind.probe
    assert issubclass(HttpsOptions, TlsOptions) and issubclass(ApiOptions, TlsOptions)
    with pytest.raises(ValueError, match=r"unknown probe kind 'icmp' \(known: api, https, tcp\)"):
        probe_kind("icmp")


def test_options_are_validated_once_and_probes_use_them_as_they_are(
        local_servers: ServerGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = local_servers.tcp()
    kind = PROBE_KINDS["tcp"]
    target = kind.target("test", "local-1", listener.url, {"ip_version": "ipv4"})
    assert target.options == TcpOptions(ip_version=4)

    def no_validation(*args: Any, **kwargs: Any) -> BaseModel:
        raise AssertionError("options validated again")

    monkeypatch.setattr(TcpOptions, "model_validate", no_validation)
    for _ in range(3):
        result = kind.probe(target, 2.0)
        assert result.ok, result
    with pytest.raises(AssertionError, match="validated again"):  # a hand-built mapping is validated per call
        kind.probe(Target("test", "local-1", listener.url, {"ip_version": 4}), 2.0)


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("tcp", {"prot": 1}, "unknown tcp probe option(s) 'prot' (known: ip_version, port)"),
    ("https", {"verify": False, "insecure": True}, "give only one of the https options 'verify', 'ca_file', "
                                                   "'insecure' (got ['insecure', 'verify'])"),
    ("api", {"verify": "/ca.pem", "ca_file": "/ca.pem"}, "give only one of the api options"),
    ("https", {"method": "GE T"}, "https option 'method' must be an HTTP method name, got 'GE T'"),
    ("api", {"params": [1]}, "api option 'params' must be a mapping, got [1]"),
    ("https", ApiOptions(), "ApiOptions are not https probe options"),
])
def test_bad_options_are_one_line(kind: str, options: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PROBE_KINDS[kind].options(options)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_tls_rule_is_shared() -> None:
    assert HttpsOptions.parse({"insecure": True}).ssl_context is not None
    assert HttpsOptions.parse({}).ssl_context is None  # the default (certifi) context
    assert ApiOptions.parse({"insecure": True}).botocore_verify is False
    assert ApiOptions.parse({"verify": "/ca.pem"}).botocore_verify == "/ca.pem"
    assert ApiOptions.parse({}).botocore_verify is None


def test_check_target_names_what_the_url_cannot_take() -> None:
    with pytest.raises(ValueError, match=r"port must be an integer in 1\.\.65535"):
        check_target("tcp", Target("s", "r", "tcp://h:1", {"port": 0}))
    with pytest.raises(ValueError, match=r"api probe for service 's3' needs options\['operation'\]"):
        check_target("api", Target("s3", "r", "https://h", {}))
    check_target("api", Target("s3", "r", "https://h", ApiOptions(operation="ListBuckets")))


def test_importing_the_table_loads_no_botocore() -> None:
    code = ("import sys, region_latency.probes, region_latency.config\n"
            "print('botocore' in sys.modules, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_ranking_and_config_do_not_import_each_other_both_ways() -> None:
    code = "import sys, region_latency.ranking\nprint('region_latency.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False"], out.stderr
