#!/usr/bin/env bash
# Runs the exporter on its built-in default (bedrock-runtime over https, every region botocore knows,
# /metrics on :9720, cache in ~/.cache). Extra arguments go to `region-latency-exporter serve`.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/ensure-venv.sh
ensure_venv '.'
exec .venv/bin/region-latency-exporter serve "$@"
