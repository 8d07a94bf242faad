"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk) for the defaults and a matrix of option
sets, and checked with real tools: `helm lint`, kubernetes-validate (the Kubernetes OpenAPI schemas, strict), the
exporter's own `check-config` on the ConfigMap it renders, promtool on the PrometheusRule's rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import region_latency
from tests.support.chart import (
    CASES,
    CHART,
    DIGEST,
    IRSA_ROLE,
    NAMESPACE,
    REPO,
    by_kind,
    exporter_config,
    manifests,
    one,
    render,
    symlink_problems,
)
from tests.support.exporter import run_cli

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (test extra)")
kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed (test extra)")

pytestmark = [pytest.mark.integration]


def test_the_chart_files_symlinks_resolve() -> None:
    """The PrometheusRule and dashboard ConfigMaps read prometheus/ and grafana/dashboards/ through them."""
    assert not symlink_problems()

# The newest Kubernetes whose schemas kubernetes-validate ships, and the oldest the chart supports (Chart.yaml).
KUBERNETES_VERSION = kv.latest_version()
OLDEST_VERSION = re.sub(r"^>=\s*([0-9.]+).*", r"\1", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, str]]:
    return {case: render(values) for case, values in CASES.items()}


def objects_of(rendered: dict[str, dict[str, str]], case: str) -> list[dict[str, Any]]:
    return manifests(rendered[case])


# -- lint and schema ------------------------------------------------------------------------------------------


def test_helm_lint_strict_finds_nothing_but_the_missing_icon() -> None:
    from tests.support.chart import quiet_native_logs

    for values in CASES.values():
        with quiet_native_logs():
            report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE,
                                      kube_version=f"v{KUBERNETES_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2 or "icon" not in m["error"]]
        assert report["errors"] == [] and problems == [], report


def null_fields(value: Any, path: str = "") -> list[str]:
    """Paths of `key:` left empty, a template slip that the schemas let through (null reads as absent)."""
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in (null_fields(v, f"{path}.{k}") if v is not None else [f"{path}.{k}"])]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in null_fields(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("case", CASES)
def test_no_field_is_left_empty(rendered: dict[str, dict[str, str]], case: str) -> None:
    assert [f"{obj['kind']}{path}" for obj in objects_of(rendered, case) for path in null_fields(obj)] == []


@pytest.mark.parametrize("version", sorted({OLDEST_VERSION, KUBERNETES_VERSION}))
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid_kubernetes(rendered: dict[str, dict[str, str]], case: str, version: str) -> None:
    for obj in objects_of(rendered, case):
        if (obj["apiVersion"], obj["kind"]) in OPERATOR_KINDS:
            continue  # no schema in kubernetes-validate; checked below (promtool for the rules)
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        assert obj["metadata"]["namespace"] == NAMESPACE, "every object names its namespace"


def test_kubernetes_validate_rejects_what_kubernetes_would() -> None:
    """The validation above can fail: a typo'd field in strict mode and a wrong type are errors."""
    deployment = one(manifests(render()), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSION, strict=True)
    service = one(manifests(render()), "Service")
    service["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kv.ValidationError):
        kv.validate(service, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"config": {"listen": ":9999"}}, "additional properties 'listen' not allowed"),
    ({"config": {"targets": [{"service": "s3", "intervall": "5s"}]}}, "additional properties 'intervall' not allowed"),
    ({"config": {"targets": [{"service": "s3", "probe": "icmp"}]}}, "/config/targets/0/probe"),
    ({"config": {"targets": [{"service": "s3", "interval": "soon"}]}}, "/config/targets/0/interval"),
    ({"config": {"targets": []}}, "/config/targets"),
    ({"cache": {"type": "memcached"}}, "/cache/type"),
    ({"cache": {"redis": {"url": "http://redis:6379"}}}, "/cache/redis/url"),
    ({"service": {"port": 70000}}, "/service/port"),
    ({"cache": {"type": "redis"}}, "cache.type is redis: set cache.redis.url or cache.redis.existingSecret"),
    ({"replicaCount": 2, "cache": {"file": {"persistence": {"enabled": True}}}},
     "replicaCount > 1 cannot share a ReadWriteOnce cache volume"),
])
def test_bad_values_fail_with_a_message_naming_the_value(values: dict[str, Any], message: str) -> None:
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as caught:
        render(values)
    assert message in str(caught.value), str(caught.value)


# -- what the pod gets ----------------------------------------------------------------------------------------


def test_deployment_runs_locked_down_with_probes_resources_and_cache_volume(
        rendered: dict[str, dict[str, str]]) -> None:
    deployment = one(objects_of(rendered, "defaults"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] == 65532 and security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert all(set(container["resources"][k]) == {"cpu", "memory"} for k in ("requests", "limits"))
    assert container["image"] == f"ghcr.io/region-latency-exporter/region-latency-exporter:{region_latency.__version__}"
    assert container["args"] == ["--config", "/etc/region-latency-exporter/config.yaml"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["config"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["cache"]
    config = yaml.safe_load(exporter_config(objects_of(rendered, "defaults")))
    assert config["cache"]["path"].startswith(mounts["cache"]["mountPath"] + "/")
    assert container["ports"][0]["containerPort"] == int(config["listen"].rsplit(":", 1)[1]) == 9720


def test_cache_options_give_the_volume_claim_or_redis_they_name(rendered: dict[str, dict[str, str]]) -> None:
    persistent = objects_of(rendered, "persistent-cache")
    claim = one(persistent, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "gp3"
    deployment = one(persistent, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    existing = objects_of(rendered, "existing-claim")
    assert by_kind(existing, "PersistentVolumeClaim") == []
    pod = one(existing, "Deployment")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["cache"]["persistentVolumeClaim"]["claimName"] == "rle-cache"
    assert yaml.safe_load(exporter_config(existing))["cache"]["path"] == \
        "/var/cache/rle/region-latency-exporter/latencies.json"

    redis = objects_of(rendered, "redis-secret")
    (container,) = one(redis, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REGION_LATENCY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rle-redis", "key": "url"}
    assert "cache" not in {m["name"] for m in container["volumeMounts"]}
    assert yaml.safe_load(exporter_config(redis))["cache"] == {"type": "redis", "key_prefix": "rle:"}


def test_config_change_rolls_the_pods_through_the_checksum_annotation() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(manifests(render(values)), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"log_level": "debug"}})
    assert checksum({}) != checksum({"cache": {"type": "none"}})


def test_service_account_carries_the_iam_role_annotation(rendered: dict[str, dict[str, str]]) -> None:
    objects = objects_of(rendered, "prometheus-operator")
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}
    assert account["automountServiceAccountToken"] is False
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    minimal = objects_of(rendered, "pinned-minimal")
    assert by_kind(minimal, "ServiceAccount") == []
    assert one(minimal, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    container = one(minimal, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(f"@{DIGEST}")


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_passes_the_exporters_own_check(rendered: dict[str, dict[str, str]], case: str,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(exporter_config(objects_of(rendered, case)))
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, f"{case}: {result.stderr}"
    assert "configuration OK" in result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["listen"] == ":9720"
    values_config = CASES[case].get("config", {})
    for target, given in zip(effective["targets"], values_config.get("targets", []), strict=False):
        assert target["service"] == given["service"] and target["probe"] == given["probe"]


def test_check_config_rejects_a_bad_rendered_config(tmp_path: Path) -> None:
    """The check above can fail: a value the schema lets through but the exporter refuses (timeout >= interval)."""
    values = {"config": {"targets": [{"service": "bedrock-runtime", "interval": "5s", "timeout": "5s"}]}}
    path = tmp_path / "config.yaml"
    path.write_text(exporter_config(manifests(render(values))))
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2 and "must be shorter than interval" in result.stderr


# -- Prometheus Operator and Grafana --------------------------------------------------------------------------


def rule_files() -> list[Path]:
    """The repository's Prometheus rule files: YAML under prometheus/ with a top-level `groups` list (promtool
    test files and scrape configs have none), in the order Helm's Files.Glob gives (sorted paths)."""
    found = []
    for path in sorted((REPO / "prometheus").rglob("*"), key=lambda p: p.relative_to(REPO).as_posix()):
        if path.suffix in {".yml", ".yaml"} and path.is_file():
            document = yaml.safe_load(path.read_text())
            if isinstance(document, dict) and "groups" in document:
                found.append(path)
    return found


def test_prometheus_rule_groups_are_the_rule_files_groups() -> None:
    files = rule_files()
    assert files, "no rule files (YAML with `groups`) under prometheus/"
    expected = [group for path in files for group in yaml.safe_load(path.read_text())["groups"]]
    rule = one(manifests(render(CASES["prometheus-operator"])), "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (./test.sh installs it as root)")
    assert rule_files(), "no rule files (YAML with `groups`) under prometheus/"
    rule = one(manifests(render(CASES["prometheus-operator"])), "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_service_monitor_scrapes_the_service_port(rendered: dict[str, dict[str, str]]) -> None:
    objects = objects_of(rendered, "prometheus-operator")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert by_kind(objects_of(rendered, "defaults"), "ServiceMonitor") == []


def test_dashboard_configmaps_hold_the_grafana_dashboards() -> None:
    dashboards = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    assert dashboards, "no dashboards under grafana/dashboards/"
    objects = manifests(render(CASES["prometheus-operator"]))
    maps = [obj for obj in by_kind(objects, "ConfigMap") if obj["metadata"]["labels"].get("grafana_dashboard") == "1"]
    held = {name: json.loads(text) for obj in maps for name, text in obj["data"].items()}
    assert held == {path.name: json.loads(path.read_text()) for path in dashboards}
    assert all(obj["metadata"]["annotations"] == {"grafana_folder": "AWS"} for obj in maps)
    names = [obj["metadata"]["name"] for obj in maps]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)


def test_packaged_chart_carries_the_rule_files_and_dashboards(tmp_path: Path) -> None:
    """`helm package` follows the files/ symlinks: the archive holds the files themselves and renders alike."""
    from tests.support.chart import quiet_native_logs

    values = CASES["prometheus-operator"]
    with quiet_native_logs(), helm_python.Chart.load(CHART) as chart:
        archive = chart.save(tmp_path)
    with quiet_native_logs(), helm_python.Chart.load(archive) as packaged:
        names = {f["name"] for f in packaged.files}
        from_archive = packaged.render(values, name="rle", namespace=NAMESPACE, is_install=True)
    assert {f"files/prometheus/{p.relative_to(REPO / 'prometheus').as_posix()}" for p in rule_files()} <= names
    assert from_archive == render(values)


# -- versions and docs ----------------------------------------------------------------------------------------


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == region_latency.__version__


def value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the chart's values, down to the first list or empty/free-form map."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in {"config", "resources", "podSecurityContext",
                                                             "securityContext", "livenessProbe",
                                                             "readinessProbe", "startupProbe"}:
            paths += value_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def test_readme_values_table_lists_every_value() -> None:
    values_section = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", values_section, re.MULTILINE))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path in value_paths(defaults) if path not in documented]
    assert missing == [], f"chart README values table lacks {missing}"
    unknown = [path for path in documented if not path.startswith(tuple(value_paths(defaults)))]
    assert unknown == [], f"chart README documents values that do not exist: {unknown}"
