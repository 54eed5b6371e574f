#!/usr/bin/env bash
# The README's main command: set up .venv (scripts/setup.sh) and run the main job on the embedded
# default (bundled models, sample case under Resources/Samples).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
medseg models
for name in $(medseg models --json | python3 -c "import json,sys; print(' '.join(m['name'] for m in json.load(sys.stdin)['bundled_models']))"); do
    medseg info "$name"
done
