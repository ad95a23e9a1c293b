#!/usr/bin/env bash
# Create ./.venv with the project installed (idempotent). Usage: scripts/setup.sh [extras]
#   extras: comma list from pyproject's optional-dependencies, default "dev".
# torch==2.13.0 is installed first, so the project's torch range is already satisfied and pip
# never pulls a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${extras}]"
