#!/usr/bin/env bash
# Create .venv in the repository and install the engine (scripts/setup.sh test: with its test tools).
# torch is pinned to 2.13.0 so that the CPU wheel is used (an unpinned torch pulls gigabytes of CUDA
# packages). A GPU user installs a CUDA build first (README, "GPU"), and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet "torch==2.13.0"
fi
if [ "${1:-}" = "test" ]; then
    .venv/bin/pip install --quiet -e ".[test]"
else
    .venv/bin/pip install --quiet -e .
fi
