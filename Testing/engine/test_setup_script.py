"""scripts/setup.sh picks the PyTorch build it installs (``--torch-plan PYTHON`` prints the choice, changes nothing):
a torch already there is kept, a local wheel offered by pip's configuration is used, a machine with an NVIDIA GPU
gets PyPI's (CUDA) build, and a CPU-only machine on plain PyPI the CPU build from download.pytorch.org."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"


@pytest.fixture(scope="module")
def fresh_python() -> str:
    """A Python >= 3.10 with pip and without torch, as on a fresh machine."""
    check = "import importlib.util as u, sys; assert sys.version_info >= (3, 10) and u.find_spec('pip') " \
            "and not u.find_spec('torch')"
    for name in ("python3.11", "python3.12", "python3.10", "python3"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", check], capture_output=True).returncode == 0:
            return path
    pytest.skip("needs a Python >= 3.10 with pip and without torch on PATH (the fresh-machine case)")


def _plan(python: str, tmp_path: Path, gpu: bool = False, pip_config: bool = True) -> str:
    env = dict(os.environ)
    if gpu:  # an nvidia-smi that lists one GPU, first on PATH
        fake = tmp_path / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
        (fake / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    if not pip_config:  # plain PyPI: no pip configuration files, no local find-links
        env["PIP_CONFIG_FILE"] = os.devnull
        for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
            env.pop(key, None)
    result = subprocess.run(["bash", str(SETUP), "--torch-plan", python], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_torch_already_installed_is_kept(tmp_path):
    assert _plan(sys.executable, tmp_path, gpu=True) == "keep"  # this environment's torch, whatever its build


def test_without_torch_the_plan_follows_the_machine(fresh_python, tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the CPU-only case cannot be shown here")
    python = fresh_python
    assert _plan(python, tmp_path, pip_config=False) == "cpu"
    assert _plan(python, tmp_path, gpu=True, pip_config=False) == "pypi"


def test_a_local_torch_wheel_in_pips_configuration_is_used(fresh_python, tmp_path):
    python = fresh_python
    probe = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--no-deps",
                            "--ignore-installed", "torch==2.13.0"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("pip's configuration offers no local torch 2.13.0 wheel (find-links) on this machine")
    assert _plan(python, tmp_path) == "local"
