"""checkov (Kubernetes and Dockerfile policies) over the Dockerfile and every rendered option set of the chart:
each finding is either fixed or justified in the chart README's "Security scan" table, and every justification
there is still needed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import CASES, CHART, REPO, render

pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (test extra)")

pytestmark = [pytest.mark.integration]

README = CHART / "README.md"


def checkov_command() -> list[str] | None:
    """checkov in this interpreter, else `$CHECKOV` or a `checkov` on PATH (it pins boto3, so it may live in an
    environment of its own)."""
    if importlib.util.find_spec("checkov") is not None:
        return [sys.executable, "-m", "checkov.main"]
    found = os.environ.get("CHECKOV") or shutil.which("checkov")
    return [found] if found else None


def justified() -> dict[str, str]:
    """Check id -> the README's reason, from the rows of its "Security scan" table."""
    section = README.read_text().split("## Security scan", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(CKV2?_[A-Z0-9]+_\d+)` \|[^|]*\|\s*(.+?)\s*\|$", section, re.MULTILINE))


def failed_checks(report: Any) -> list[dict[str, Any]]:
    reports = report if isinstance(report, list) else [report]
    return [check for r in reports for check in r.get("results", {}).get("failed_checks", [])]


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    command = checkov_command()
    if command is None:
        pytest.skip("checkov is not installed: it needs an environment of its own (docs/DEPLOY.md); "
                    "set CHECKOV to its executable or put it on PATH")
    directory = tmp_path_factory.mktemp("checkov")
    files = [str(REPO / "Dockerfile")]
    for case, values in CASES.items():
        path = directory / f"{case}.yaml"
        path.write_text("\n---\n".join(text for name, text in sorted(render(values).items()) if name.endswith(".yaml")))
        files.append(str(path))
    result = subprocess.run(
        [*command, *(arg for f in files for arg in ("-f", f)), "--framework", "kubernetes", "dockerfile",
         "--skip-download", "--quiet", "--output", "json"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    scanned = {r["check_type"]: r["summary"]["resource_count"] for r in reports if "check_type" in r}
    assert scanned.get("dockerfile", 0) >= 1 and scanned.get("kubernetes", 0) >= 7 * len(CASES) - 10, scanned
    return failed_checks(report)


def test_every_checkov_finding_is_justified_in_the_chart_readme(findings: list[dict[str, Any]]) -> None:
    reasons = justified()
    unjustified = sorted({f"{f['check_id']} {f['check_name']} ({Path(f['file_path']).name})" for f in findings
                          if f["check_id"] not in reasons})
    assert unjustified == [], "fix these, or justify them in the chart README's Security scan table"


def test_every_justification_is_still_needed(findings: list[dict[str, Any]]) -> None:
    stale = sorted(set(justified()) - {f["check_id"] for f in findings})
    assert stale == [], f"checkov no longer reports {stale}: drop them from the chart README"


def test_the_dockerfile_has_no_finding_at_all(findings: list[dict[str, Any]]) -> None:
    assert [f["check_id"] for f in findings if Path(f["file_path"]).name == "Dockerfile"] == []


def test_pinning_the_image_digest_clears_the_image_findings(findings: list[dict[str, Any]]) -> None:
    """The justification for CKV_K8S_43/15 says setting image.digest clears them: the pinned case shows it."""
    pinned = [f["check_id"] for f in findings if Path(f["file_path"]).name == "pinned-minimal.yaml"]
    assert pinned == []
    assert "digest" in CASES["pinned-minimal"]["image"]
