#!/usr/bin/env bash
# The whole test suite (CI's .ci/run calls exactly this). Tests needing ../shared/data skip with a reason
# when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check MedSegExtension Testing scripts
.venv/bin/python -m pytest "$@"
