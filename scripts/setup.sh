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
    # System tools the tests run (each test skips, naming the tool, where it is missing): dicom3tools (dciodvfy
    # checks every DICOM SEG and SR), orthanc + orthanc-dicomweb (the PACS that medseg send is tested against;
    # the tests start their own on free ports), poppler-utils (pdftotext/pdfinfo/pdftoppm read the PDF report back).
    # Installed only as root with apt-get; extend the list, one line for all.
    APT_PACKAGES="dicom3tools orthanc orthanc-dicomweb poppler-utils"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
        if [ -n "$missing" ]; then  # a fresh container has no package lists: update once, then install
            { apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
              || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; } \
              || echo "setup.sh: could not install $missing; the tests that need them will say so" >&2
        fi
    fi
    .venv/bin/pip install --quiet -e ".[test]"
else
    .venv/bin/pip install --quiet -e .
fi
