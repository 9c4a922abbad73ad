#!/usr/bin/env bash
# Create the .venv and install the toolkit's dependencies.
#   bash setup.sh            runtime dependencies (enough to train and evaluate)
#   bash setup.sh --dev      + pytest, ruff, and (as root) espeak-ng/sox for real-speech tests
#   bash setup.sh --cluster  + bring up the one-machine SLURM test cluster (root; tests/cluster/up.sh)
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
dev=0; cluster=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --cluster) cluster=1 ;;
    *) echo "setup.sh: unknown option $arg (use --dev and/or --cluster)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "setup.sh: $PY not found; install Python 3.11 or set PYTHON=..." >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
req=requirements.txt; [ "$dev" = 1 ] && req=requirements-dev.txt
.venv/bin/python -m pip install -q -r "$req"
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && ! command -v espeak-ng >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq espeak-ng sox >/dev/null
fi
if [ "$cluster" = 1 ]; then
  bash tests/cluster/up.sh
fi
echo "setup.sh: ready (.venv/bin/python)"
