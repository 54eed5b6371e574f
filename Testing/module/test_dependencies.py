"""Versions, not only presence (MedSegLib.dependencies): the installed distributions' real metadata against
pyproject.toml's specifiers, a too-old package reported and offered for upgrade, and the route the installation
takes (slicer.packaging.pip_ensure on Slicer >= 5.12, slicer.util.pip_install before)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from MedSegLib.dependencies import (
    REQUIREMENTS,
    Problem,
    ensure_requirements,
    install_plan,
    missing_requirements,
    requirement_problems,
    slicer_pip_ensure,
)

REPO = Path(__file__).resolve().parents[2]


def _versions(**overrides: str):
    """Real installed versions, with some distributions replaced (the "too old" cases)."""
    return lambda name: overrides.get(name) or importlib.metadata.version(name)


def test_the_requirements_are_pyprojects_dependencies():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11 (tomllib)")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(r.pip for r in REQUIREMENTS) == sorted(dependencies)


def test_this_environment_satisfies_every_requirement_by_its_real_metadata():
    assert requirement_problems() == [] and missing_requirements() == []
    for requirement in REQUIREMENTS:  # the comparison the check makes, on the real installed versions
        assert requirement.accepts(importlib.metadata.version(requirement.distribution))
    assert REQUIREMENTS[0].accepts("2.13.0+cpu") and REQUIREMENTS[0].accepts("2.14.0.dev20260101")
    assert not REQUIREMENTS[0].accepts("2.3.1") and not REQUIREMENTS[0].accepts("not a version")


def test_a_too_old_package_is_reported_with_its_version_and_planned_for_upgrade():
    problems = requirement_problems(_versions(numpy="1.21.0", torch="2.1.2+cu118"))
    assert [(p.requirement.title, p.installed) for p in problems] == [("PyTorch", "2.1.2+cu118"), ("NumPy", "1.21.0")]
    assert problems[1].describe() == "NumPy 1.21.0 (MedSeg needs >=1.24)"
    assert [r.module for r in missing_requirements(version_of=_versions(numpy="1.21.0"))] == ["numpy"]

    plan = install_plan(problems, pytorch_extension=True)
    assert plan.torch_via_extension and plan.torch_requirement == ">=2.4" and plan.pip == ("numpy>=1.24",)
    lines = plan.message.splitlines()
    assert "Slicer's Python has PyTorch 2.1.2+cu118; MedSeg needs >=2.4: it will be upgraded." in lines
    assert "Slicer's Python has NumPy 1.21.0; MedSeg needs >=1.24: it will be upgraded." in lines
    assert any(line.startswith("Restart Slicer after the upgrade") for line in lines)
    assert not any("not installed" in line for line in lines)


def test_a_module_without_metadata_is_accepted_and_a_missing_module_is_missing():
    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    assert requirement_problems(no_metadata) == []  # importable, version unknown: never reinstalled over Slicer's
    gone = requirement_problems(find_spec=lambda name: None if name == "safetensors" else object())
    assert gone == [Problem(REQUIREMENTS[1])] and gone[0].describe() == "safetensors (not installed)"


class _PipEnsure:
    """Stands in for slicer.packaging.pip_ensure (Slicer >= 5.12), with its real signature."""

    def __init__(self, upgrades: dict[str, str]):
        self.calls, self.upgrades = [], upgrades

    def __call__(self, requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                 requester=None, skip_in_testing=True, show_progress=True):
        self.calls.append((requirements, prompt_install, requester))
        for name in requirements:
            self.upgrades.pop(name.split(">")[0], None)


def test_pip_ensure_installs_the_upgrades_after_one_question():
    installed = {"numpy": "1.21.0"}  # a too-old NumPy, upgraded by the installer
    ensure, questions, pip_calls = _PipEnsure(installed), [], []

    def version_of(name):
        return installed.get(name) or importlib.metadata.version(name)

    state, message = ensure_requirements(lambda text: questions.append(text) or True, lambda v: None,
                                         pip_calls.append, True, pip_ensure=ensure, version_of=version_of)
    assert state == "installed" and message.startswith("Installed NumPy.")
    assert ensure.calls == [(["numpy>=1.24"], False, "MedSeg")] and pip_calls == []  # Slicer's own prompt is off
    assert len(questions) == 1 and "NumPy 1.21.0" in questions[0]
    assert ("Restart Slicer to load the new version of NumPy." in message) == ("numpy" in sys.modules)


def test_without_pip_ensure_the_fallback_installer_runs_and_declining_installs_nothing():
    installed = {"SimpleITK": "2.1.0"}
    pip_calls = []

    def pip_install(requirements):
        pip_calls.append(requirements)
        installed.clear()

    def version_of(name):
        return installed.get(name) or importlib.metadata.version(name)

    state, message = ensure_requirements(lambda text: False, lambda v: None, pip_install, True, pip_ensure=None,
                                         version_of=version_of)
    assert state == "declined" and pip_calls == [] and message.endswith("without SimpleITK.")
    state, _ = ensure_requirements(lambda text: True, lambda v: None, pip_install, True, pip_ensure=None,
                                   version_of=version_of)
    assert state == "installed" and pip_calls == [["SimpleITK>=2.3"]]


def test_slicer_pip_ensure_is_found_only_where_slicer_has_it(monkeypatch):
    pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")
    assert slicer_pip_ensure() is None  # slicer-core has no slicer.packaging (Slicer >= 5.12 has)
    module = type(sys)("slicer.packaging")
    module.pip_ensure = _PipEnsure({})
    monkeypatch.setitem(sys.modules, "slicer.packaging", module)
    assert slicer_pip_ensure() is module.pip_ensure
