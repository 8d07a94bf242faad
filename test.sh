#!/usr/bin/env bash
# Runs ruff, mypy and the whole test suite. Makes ./.venv with the test dependencies and, as root on Debian, installs the
# real tools the integration tests use (Prometheus + promtool, blackbox_exporter, redis-server, Chromium).
# Extra arguments go to pytest, e.g. ./test.sh tests/unit -q
set -euo pipefail
cd "$(dirname "$0")"
DEBIAN_PACKAGES=(python3-venv iproute2 prometheus prometheus-alertmanager prometheus-blackbox-exporter redis-server
                 chromium)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
. scripts/ensure-venv.sh
ensure_venv '.[test]'
# checkov (scans the chart and the Dockerfile) pins boto3 and packaging versions the project cannot use: own venv
ensure_tool_venv .venv-checkov 'checkov==3.3.30'
export CHECKOV="$PWD/.venv-checkov/bin/checkov"
.venv/bin/ruff check exporter tests bench
.venv/bin/mypy  # strict on exporter/region_latency and exporter/region_latency_devkit ([tool.mypy] in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
