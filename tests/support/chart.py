"""Renders the Helm chart offline (helm-python-sdk: Helm's own Go engine in a shared library, no helm binary, no
cluster) for the default values and a matrix of option sets, shared by the chart and checkov tests."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "region-latency-exporter"
RELEASE = "rle"
NAMESPACE = "monitoring"
IRSA_ROLE = "arn:aws:iam::123456789012:role/region-latency-exporter"
DIGEST = "sha256:" + "ab" * 32

# Option sets rendered by the tests: every template branch is taken by at least one.
CASES: Mapping[str, dict[str, Any]] = {
    "defaults": {},
    "prometheus-operator": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s",
                           "relabelings": [{"targetLabel": "cluster", "replacement": "eu-1"}]},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "AWS"}},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}]},
    },
    "persistent-cache": {
        "cache": {"file": {"persistence": {"enabled": True, "storageClassName": "gp3", "size": "128Mi"}}},
    },
    "existing-claim": {  # with a Redis secret left over from an earlier setting: not used with a file cache
        "cache": {"file": {"mountPath": "/var/cache/rle", "persistence": {"enabled": True,
                                                                           "existingClaim": "rle-cache"}},
                  "redis": {"existingSecret": "left-over"}},
    },
    "redis-secret": {
        "replicaCount": 2,
        "cache": {"type": "redis", "redis": {"existingSecret": "rle-redis", "keyPrefix": "rle:"}},
        "networkPolicy": {"egressPorts": [443, 6379]},
    },
    "redis-url-api-probe": {
        "cache": {"type": "redis", "redis": {"url": "redis://redis.cache.svc:6379/0"}},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "config": {"concurrency": 16, "log_level": "warning", "targets": [
            {"name": "bedrock-api", "service": "bedrock", "probe": "api", "regions": ["us-east-1", "eu-central-1"],
             "interval": "1m", "timeout": "10s"},
            {"name": "bedrock-runtime-vpc", "service": "bedrock-runtime", "probe": "https",
             "regions": ["us-west-2"], "interval": "30s", "timeout": "5s",
             "endpoints": {"us-east-1": "https://vpce-0abc-defg.bedrock-runtime.us-east-1.vpce.amazonaws.com"}},
            {"service": "bedrock", "probe": "tcp", "regions": "auto", "exclude_regions": ["us-west-1"],
             "interval": "45s", "timeout": "3s", "options": {"port": 443}},
        ], "ranking": {"min_samples": 5}},
    },
    "otlp-push": {  # the exporter's own validation checks the rendered otlp section (test_rendered_config_...)
        "config": {"targets": [{"service": "bedrock-runtime", "probe": "https", "regions": "auto"}],
                   "otlp": {"endpoint": "http://otel-collector.monitoring.svc:4318", "vantage": "eks-eu-1",
                            "interval": "30s"}},
        "networkPolicy": {"egressPorts": [443, 4318]},
    },
    "pinned-minimal": {
        "image": {"digest": DIGEST, "pullPolicy": "IfNotPresent"},
        "cache": {"type": "none"},
        "serviceAccount": {"create": False},
        "networkPolicy": {"enabled": False},
        "service": {"type": "ClusterIP", "port": 8080},
        "extraEnv": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "monitoring", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "platform"},
        "priorityClassName": "system-cluster-critical",
    },
}


def symlink_problems() -> list[str]:
    """The chart's files/ symlinks whose target (the repository's prometheus/ or grafana/dashboards/) is missing:
    Helm refuses to load a chart with a dangling symlink."""
    files = CHART / "files"
    return [f"{link.relative_to(REPO)} -> {os.readlink(link)}" for link in sorted(files.iterdir())
            if link.is_symlink() and not link.exists()]


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """The native library logs each followed symlink on stderr (fd 2); keep test output readable."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def render(values: Mapping[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` would print them."""
    import helm_python

    with quiet_native_logs(), helm_python.Chart.load(CHART) as chart:
        return chart.render(dict(values or {}), name=name, namespace=namespace, is_install=True)


def manifests(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (empty documents dropped)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(io.StringIO(text)) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = by_kind(objects, kind)
    return obj


def exporter_config(objects: list[dict[str, Any]]) -> str:
    """The config.yaml the chart's ConfigMap gives the exporter."""
    (configmap,) = [obj for obj in by_kind(objects, "ConfigMap") if "config.yaml" in obj.get("data", {})]
    text: str = configmap["data"]["config.yaml"]
    return text
