"""Which engine requirements are missing from Slicer's Python, and how to install them (asked first, never at import).

PyTorch comes from the PyTorch extension's installer when that extension is present (it picks the CUDA build that
matches the GPU driver, or the CPU build); otherwise, and for the small packages, from PyPI with
``slicer.util.pip_install``. Only :func:`missing_requirements` and :func:`install_plan` live here (no Qt, no Slicer);
:func:`ensure_requirements` runs the whole flow (ask, install, check again) with the application's services passed in,
so that it is tested here with stand-ins.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["REQUIREMENTS", "InstallPlan", "Requirement", "ensure_requirements", "install_plan", "missing_requirements"]


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    pip: str  # pip requirement specifier
    title: str  # what the user reads


REQUIREMENTS = (
    Requirement("torch", "torch>=2.4", "PyTorch"),
    Requirement("safetensors", "safetensors>=0.4", "safetensors"),
    Requirement("SimpleITK", "SimpleITK>=2.3", "SimpleITK"),
    Requirement("numpy", "numpy>=1.24", "NumPy"),
)


def missing_requirements(find_spec: Callable[[str], object] = importlib.util.find_spec,
                         requirements: Sequence[Requirement] = REQUIREMENTS) -> list[Requirement]:
    """The requirements whose module cannot be found (nothing is imported)."""
    missing = []
    for requirement in requirements:
        try:
            found = find_spec(requirement.module) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            missing.append(requirement)
    return missing


@dataclass(frozen=True)
class InstallPlan:
    """What to install: torch through the PyTorch extension or not, and the pip requirement specifiers."""

    torch_via_extension: bool
    torch_requirement: str  # version part for PyTorchUtilsLogic.installTorch, e.g. ">=2.4"
    pip: tuple[str, ...]
    message: str  # the question shown before anything is installed


def install_plan(missing: Sequence[Requirement], pytorch_extension: bool) -> InstallPlan:
    """How to install `missing`, and the question to ask first.

    Args:
        missing: from :func:`missing_requirements`.
        pytorch_extension: the PyTorch extension (``slicer.modules.pytorchutils``) is installed.
    """
    torch = next((r for r in missing if r.module == "torch"), None)
    via_extension = torch is not None and pytorch_extension
    pip = tuple(r.pip for r in missing if not (via_extension and r is torch))
    names = ", ".join(r.title for r in missing)
    lines = [f"MedSeg needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed in Slicer's Python.",
             ""]
    if via_extension:
        lines.append("PyTorch will be installed by the PyTorch extension, which picks the build for your GPU (or the "
                     "CPU build).")
    elif torch is not None:
        lines.append("PyTorch will be installed from PyPI with pip. Installing the PyTorch extension first (Extensions "
                     "Manager) picks the right CUDA build for your GPU.")
    if pip:
        lines.append(f"pip will install: {' '.join(pip)}.")
    lines += ["", "This downloads up to a few GB and can take several minutes. Install now?"]
    return InstallPlan(via_extension, torch.pip[len("torch"):] if torch is not None else "", pip, "\n".join(lines))


def ensure_requirements(confirm: Callable[[str], bool], install_torch: Callable[[str], Any],
                        pip_install: Callable[[list[str]], Any], pytorch_extension: bool,
                        find_spec: Callable[[str], object] = importlib.util.find_spec) -> tuple[str, str]:
    """Ask, then install what is missing.

    Args:
        confirm: shows the question, True to go on (``slicer.util.confirmOkCancelDisplay``).
        install_torch: installs PyTorch through the PyTorch extension, given the version part (``">=2.4"``); returns
            None when the user or the installer gave up (``PyTorchUtilsLogic().installTorch``).
        pip_install: installs a list of requirement specifiers (``slicer.util.pip_install``).
        pytorch_extension: the PyTorch extension is installed.

    Returns:
        (state, message): state is "ready" (nothing was missing), "installed", "declined" or "incomplete"; the message
        is for the panel's status line. Installer errors propagate.
    """
    missing = missing_requirements(find_spec)
    if not missing:
        return "ready", ""
    plan = install_plan(missing, pytorch_extension)
    if not confirm(plan.message):
        return "declined", "Nothing was installed: MedSeg cannot segment without " + \
            ", ".join(r.title for r in missing) + "."
    if plan.torch_via_extension and install_torch(plan.torch_requirement) is None:
        return "incomplete", "PyTorch was not installed (the PyTorch extension's installer stopped)."
    if plan.pip:
        pip_install(list(plan.pip))
    importlib.invalidate_caches()
    still = missing_requirements(find_spec)
    if still:
        return "incomplete", "Still missing after installing: " + ", ".join(r.title for r in still) + \
            "; restart Slicer and try again."
    return "installed", "Installed " + ", ".join(r.title for r in missing) + "."
