"""`ip_families`: the config field, the expansion into one resolved target per family (dual-stack endpoints, the
family fixed in the probe options), and the keys that keep one EMA per family apart."""

from __future__ import annotations

import pytest

from region_latency.app import cache_prefix
from region_latency.config import ConfigError, load_config
from region_latency.state import TargetInfo
from region_latency.targets import load_targets


def config_text(extra: str, probe: str = "tcp") -> str:
    return (f"targets:\n  - name: x\n    service: bedrock-runtime\n    probe: {probe}\n    regions: [us-east-1]\n"
            f"    {extra}\n")


@pytest.mark.parametrize("extra, probe, message", [
    ("ip_families: [ipv5]", "tcp", "targets[0].ip_families[0]: unknown IP family 'ipv5' (use ipv4 or ipv6)"),
    ("ip_families: [4, ipv4]", "tcp", "targets[0].ip_families[1]: IP family ipv4 is listed twice"),
    ("ip_families: ipv6", "tcp", "ip_families must be a list of ipv4 and/or ipv6"),
    ("ip_families: [ipv6]", "api", "the api probe cannot choose an address family (use tcp or https)"),
    ("ip_families: [6]\n    options: {ip_version: 4}", "https", "give options.ip_version or ip_families, not both"),
])
def test_bad_ip_families_are_one_line_errors(extra: str, probe: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_config("x.yaml", env={}, text=config_text(extra, probe))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_numbers_and_names_both_spell_a_family() -> None:
    config = load_config("x.yaml", env={}, text=config_text("ip_families: [6, ipv4]"))
    assert config.targets[0].ip_families == ("ipv6", "ipv4")
    assert load_config("x.yaml", env={}, text=config_text("dualstack: false")).targets[0].ip_families == ()


def test_both_families_probe_the_dual_stack_endpoints_each_over_its_own_family() -> None:
    resolved = load_targets("x.yaml", env={}, text=config_text("ip_families: [ipv4, ipv6]"))
    v4, v6 = resolved.targets
    assert (v4.key, v4.name, v4.ip_family) == ("x@ipv4", "x", "ipv4")
    assert (v6.key, v6.name, v6.ip_family) == ("x@ipv6", "x", "ipv6")
    assert v4.urls["us-east-1"] == v6.urls["us-east-1"] == "https://bedrock-runtime.us-east-1.api.aws"
    assert v4.probe_targets()["us-east-1"].options.ip_version == 4  # type: ignore[union-attr]
    assert v6.probe_targets()["us-east-1"].options.ip_version == 6  # type: ignore[union-attr]


def test_ipv4_alone_keeps_the_default_endpoints_and_no_family_keeps_todays_target() -> None:
    (only_v4,) = load_targets("x.yaml", env={}, text=config_text("ip_families: [ipv4]")).targets
    assert only_v4.urls["us-east-1"] == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert only_v4.ip_family == "ipv4"
    (plain,) = load_targets("x.yaml", env={}, text=config_text("interval: 30s")).targets
    assert (plain.key, plain.ip_family) == ("x", None)
    assert plain.probe_targets()["us-east-1"].options.ip_version is None  # type: ignore[union-attr]


def test_each_family_has_its_own_cache_key() -> None:
    assert cache_prefix(TargetInfo("x", "s", "tcp")) == "x:s:tcp"
    assert cache_prefix(TargetInfo("x", "s", "tcp", ip_family="ipv6")) == "x:s:tcp+ipv6"
    assert cache_prefix(TargetInfo("x", "s", "https", measure="warm", ip_family="ipv4")) == "x:s:https+warm+ipv4"
