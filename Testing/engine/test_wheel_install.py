"""A built wheel of the engine works outside the source tree: it carries the bundled models and samples.

The wheel is built from a copy of the sources in tmp_path (nothing is written to the checkout), installed with
``--no-deps`` into a fresh venv under tmp_path, and run from there: ``medseg models`` lists the bundled models and
``medseg segment`` segments the bundled sample with one of them. To stay fast, the fresh venv reuses this
environment's installed dependencies (torch, numpy, SimpleITK, safetensors) through a ``.pth`` line instead of
installing them again (a full ``pip install medseg-*.whl`` into an empty venv, torch from a local wheel, took minutes
on this shared machine); the test checks that ``medseg`` itself, and the models it lists, come from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE.txt")
BUNDLED = ("Models", "Samples")


def _run(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The engine's wheel, built from a copy of the checkout's sources."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (pyproject's build-system)")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "MedSegExtension" / "medseg", source / "MedSegExtension" / "medseg",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in BUNDLED:
        shutil.copytree(REPO / "Resources" / folder, source / "Resources" / folder)
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", out, source, cwd=source)
    wheels = list(out.glob("medseg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site packages) with the wheel installed, reusing this environment's dependencies."""
    root = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root)
    python = root / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root)
                .stdout.strip())
    # torch & co. from this environment, after the venv's own site-packages (where the wheel goes) on sys.path.
    (site / "zz_reuse_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel,
         cwd=root)
    return root


def test_the_wheel_carries_the_bundled_models_samples_and_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for folder in BUNDLED:
        expected = {p.name for p in (REPO / "Resources" / folder).iterdir() if p.is_file()}
        assert {Path(n).name for n in names if n.startswith(f"medseg/resources/{folder}/")} == expected
    assert any(n.endswith("licenses/LICENSE.txt") or n.endswith("/LICENSE.txt") for n in names)
    assert "medseg/cli.py" in names and not any(n.startswith(("MedSegLib/", "Resources/")) for n in names)


def test_medseg_models_and_segment_work_from_the_wheel_install(venv, tmp_path):
    python, medseg = venv / "bin" / "python", venv / "bin" / "medseg"
    where = json.loads(_run(python, "-c", "import json, medseg, medseg.catalog as c; print(json.dumps("
                            "[medseg.__file__, str(c.resources_dir())]))", cwd=tmp_path).stdout)
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where  # not the checkout's copy
    resources = Path(where[1])

    listing = _run(medseg, "models", cwd=tmp_path).stdout
    for path in (REPO / "Resources" / "Models").glob("*.safetensors"):
        assert path.stem in listing

    sample = resources / "Samples" / "hippocampus_001_T1w.nii.gz"
    output, report = tmp_path / "seg.seg.nrrd", tmp_path / "report.json"
    _run(medseg, "segment", sample, "--model", "hippocampus-unet3d", "--device", "cpu", "--output", output,
         "--report", report, cwd=tmp_path)
    data = json.loads(report.read_text())
    volumes = {m["name"]: m["volume_ml"] for m in data["labels"]}
    assert output.is_file() and data["model"]["name"] == "hippocampus-unet3d"
    assert set(volumes) == {"anterior hippocampus", "posterior hippocampus"} and all(v > 0 for v in volumes.values())
