#!/usr/bin/env bash
# Create .venv in the repository and install the engine (scripts/setup.sh test: with its test tools).
# PyTorch: a torch already in .venv is kept, whatever its build (a GPU user may install a CUDA build first:
# README, "PyTorch: CPU or GPU"). Otherwise torch 2.13.0 comes from a local wheel when pip's configuration offers
# one (find-links), else, with an NVIDIA GPU (nvidia-smi) or on macOS, from PyPI (on Linux the CUDA build and its
# CUDA libraries), else the CPU build from https://download.pytorch.org/whl/cpu (192 MB for Linux x86_64, Python
# 3.11, where plain PyPI's Linux build had pulled over 1.5 GB of CUDA packages here before it was stopped).
# scripts/setup.sh --torch-plan [PYTHON] prints that choice and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

torch_plan() {  # prints "keep", "local", "pypi" or "cpu"; $1: the python whose pip decides
    if "$1" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" 2>/dev/null; then echo keep
    elif "$1" -m pip install --dry-run --quiet --no-index --no-deps --ignore-installed "$TORCH" >/dev/null 2>&1; then
        echo local
    elif [ "$(uname -s)" = Darwin ] || nvidia-smi -L >/dev/null 2>&1; then echo pypi
    else echo cpu
    fi
}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ "${1:-}" = "--torch-plan" ]; then  # optional 2nd argument: the python to decide for (default: .venv's)
    if [ -n "${2:-}" ]; then torch_plan "$2"; elif [ -x .venv/bin/python ]; then torch_plan .venv/bin/python
    else torch_plan "$PYTHON"; fi
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
case "$(torch_plan .venv/bin/python)" in
    local | pypi) .venv/bin/pip install --quiet "$TORCH" ;;  # pip prefers the local 2.13.0+cpu wheel to PyPI's 2.13.0
    cpu) .venv/bin/pip install --quiet "$TORCH" --index-url "$CPU_INDEX" ;;
esac
if [ "${1:-}" = "test" ]; then
    # System tools the tests run (each test skips, naming the tool, where it is missing): dicom3tools (dciodvfy
    # checks every DICOM SEG and SR), orthanc + orthanc-dicomweb (the PACS that medseg send is tested against;
    # the tests start their own on free ports), poppler-utils (pdftotext/pdfinfo/pdftoppm read the PDF report back),
    # chromium (the browser tests of medseg serve drive it with Playwright) and the EGL/Mesa libraries VTK renders
    # the web page's views with, without a display (libegl1 libegl-mesa0 libgl1-mesa-dri).
    # Installed only as root with apt-get; extend the list, one line for all.
    APT_PACKAGES="dicom3tools orthanc orthanc-dicomweb poppler-utils chromium libegl1 libegl-mesa0 libgl1-mesa-dri"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
        if [ -n "$missing" ]; then  # a fresh container has no package lists: update once, then install
            { apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
              || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; } \
              || echo "setup.sh: could not install $missing; the tests that need them will say so" >&2
        fi
    fi
    .venv/bin/pip install --quiet -e ".[test]"
    .venv/bin/pip install --quiet --no-deps "slicer-layer-dm==2.0.0"  # medseg serve: pins slicer-core 5.11, see pyproject
elif [ "${1:-}" = "web" ]; then  # medseg serve (scripts/setup.sh web)
    .venv/bin/pip install --quiet -e ".[web]"
    .venv/bin/pip install --quiet --no-deps "slicer-layer-dm==2.0.0"
else
    .venv/bin/pip install --quiet -e .
fi
