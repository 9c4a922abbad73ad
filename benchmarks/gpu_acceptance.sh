#!/usr/bin/env bash
# GPU acceptance in one command (see benchmarks/gpu_acceptance.py for what it checks):
#   bash benchmarks/gpu_acceptance.sh [REPORT.json]
# Uses .venv/bin/python when present, else python3 (e.g. a cluster module's Python with torch).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_acceptance.py ${1:+--report "$1"} "${@:2}"
