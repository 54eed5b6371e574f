"""Which engine requirements Slicer's Python lacks or has too old, and how to install them (asked first, never at
import).

Versions are checked, not only presence: each requirement's installed distribution version (``importlib.metadata``)
is compared with its specifier, the same as pyproject.toml's ``dependencies`` (a test keeps the two equal), so a
too-old NumPy, SimpleITK or PyTorch is reported and offered for upgrade. A module that imports but has no
distribution metadata (a build of one's own) is accepted: its version cannot be read, and reinstalling it over
Slicer's own could break Slicer.

PyTorch comes from the PyTorch extension's installer when that extension is present (it picks the CUDA build that
matches the GPU driver, or the CPU build). The pip requirements (and PyTorch without that extension) go through
``slicer.packaging.pip_ensure`` on Slicer >= 5.12 (its progress dialog, its restart prompt when an upgraded package
was already imported, nothing installed in testing mode), else through ``slicer.util.pip_install``. No Qt here:
:func:`ensure_requirements` runs the whole flow (ask, install, check again) with the application's services passed
in, so that it is tested here with stand-ins.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement as _PipRequirement
from packaging.version import InvalidVersion, Version

from .i18n import tr as _

__all__ = ["REQUIREMENTS", "InstallPlan", "Problem", "Requirement", "ensure_requirements", "install_plan",
           "missing_requirements", "requirement_problems", "slicer_pip_ensure"]

REQUESTER = "MedSeg"  # the name slicer.packaging.pip_ensure shows in its dialogs


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    pip: str  # pip requirement specifier, as in pyproject.toml
    title: str  # what the user reads

    @property
    def distribution(self) -> str:
        """The distribution name (``SimpleITK`` in ``SimpleITK>=2.3``)."""
        return _PipRequirement(self.pip).name

    @property
    def specifier(self) -> str:
        """The version part (``>=2.3``)."""
        return str(_PipRequirement(self.pip).specifier)

    def accepts(self, version: str) -> bool:
        """True when `version` satisfies the specifier (pre-releases and local builds such as ``+cpu`` included)."""
        try:
            return _PipRequirement(self.pip).specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False


REQUIREMENTS = (
    Requirement("torch", "torch>=2.4", "PyTorch"),
    Requirement("safetensors", "safetensors>=0.4", "safetensors"),
    Requirement("SimpleITK", "SimpleITK>=2.3", "SimpleITK"),
    Requirement("numpy", "numpy>=1.24", "NumPy"),
)


@dataclass(frozen=True)
class Problem:
    """A requirement that is not installed (``installed`` None) or installed in a version it does not accept."""

    requirement: Requirement
    installed: str | None = None

    @property
    def outdated(self) -> bool:
        return self.installed is not None

    def describe(self) -> str:
        """``PyTorch (not installed)`` or ``NumPy 1.21.0 (MedSeg needs >=1.24)``, for the panel."""
        if self.installed is None:
            return _("{title} (not installed)").format(title=self.requirement.title)
        return _("{title} {installed} (MedSeg needs {specifier})").format(
            title=self.requirement.title, installed=self.installed, specifier=self.requirement.specifier)


def _installed_version(requirement: Requirement, version_of: Callable[[str], str],
                       find_spec: Callable[[str], object]) -> str | None:
    """The installed version, "" for an importable module without metadata, None when it cannot be imported."""
    try:
        if find_spec(requirement.module) is None:
            return None
    except (ImportError, ValueError):  # a broken or half-removed package
        return None
    try:
        return version_of(requirement.distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def requirement_problems(version_of: Callable[[str], str] = importlib.metadata.version,
                         find_spec: Callable[[str], object] = importlib.util.find_spec,
                         requirements: Sequence[Requirement] = REQUIREMENTS) -> list[Problem]:
    """The requirements that are missing or too old (nothing is imported).

    Args:
        version_of: a distribution name -> its installed version; raises ``importlib.metadata.PackageNotFoundError``.
        find_spec: a module name -> its spec or None (whether it can be imported).
    """
    problems = []
    for requirement in requirements:
        installed = _installed_version(requirement, version_of, find_spec)
        if installed is None:
            problems.append(Problem(requirement))
        elif installed and not requirement.accepts(installed):
            problems.append(Problem(requirement, installed))
    return problems


def missing_requirements(find_spec: Callable[[str], object] = importlib.util.find_spec,
                         requirements: Sequence[Requirement] = REQUIREMENTS,
                         version_of: Callable[[str], str] = importlib.metadata.version) -> list[Requirement]:
    """The requirements MedSeg cannot run with: not installed, or too old (see :func:`requirement_problems`)."""
    return [p.requirement for p in requirement_problems(version_of, find_spec, requirements)]


@dataclass(frozen=True)
class InstallPlan:
    """What to install: torch through the PyTorch extension or not, and the pip requirement specifiers."""

    torch_via_extension: bool
    torch_requirement: str  # version part for PyTorchUtilsLogic.installTorch, e.g. ">=2.4"
    pip: tuple[str, ...]
    message: str  # the question shown before anything is installed


def _as_problems(problems: Sequence[Problem | Requirement]) -> list[Problem]:
    return [p if isinstance(p, Problem) else Problem(p) for p in problems]


def _plan_lines(missing: Sequence[Problem], outdated: Sequence[Problem]) -> list[str]:
    lines = []
    if missing:
        names = ", ".join(p.requirement.title for p in missing)
        template = (_("MedSeg needs {names}, which is not installed in Slicer's Python.") if len(missing) == 1
                    else _("MedSeg needs {names}, which are not installed in Slicer's Python."))
        lines.append(template.format(names=names))
    for problem in outdated:
        lines.append(_("Slicer's Python has {title} {installed}; MedSeg needs {specifier}: it will be upgraded.")
                     .format(title=problem.requirement.title, installed=problem.installed,
                             specifier=problem.requirement.specifier))
    return lines


def install_plan(problems: Sequence[Problem | Requirement], pytorch_extension: bool) -> InstallPlan:
    """How to install or upgrade `problems`, and the question to ask first.

    Args:
        problems: from :func:`requirement_problems` (a plain :class:`Requirement` counts as not installed).
        pytorch_extension: the PyTorch extension (``slicer.modules.pytorchutils``) is installed.
    """
    problems = _as_problems(problems)
    torch = next((p for p in problems if p.requirement.module == "torch"), None)
    via_extension = torch is not None and pytorch_extension
    pip = tuple(p.requirement.pip for p in problems if not (via_extension and p is torch))
    lines = [*_plan_lines([p for p in problems if not p.outdated], [p for p in problems if p.outdated]), ""]
    if via_extension:
        lines.append(_("PyTorch will be installed by the PyTorch extension, which picks the build for your GPU (or "
                       "the CPU build)."))
    elif torch is not None:
        lines.append(_("PyTorch will be installed from PyPI with pip. Installing the PyTorch extension first "
                       "(Extensions Manager) picks the right CUDA build for your GPU."))
    if pip:
        lines.append(_("pip will install: {requirements}.").format(requirements=" ".join(pip)))
    if any(p.outdated for p in problems):
        lines.append(_("Restart Slicer after the upgrade: a package already loaded keeps its old version until then."))
    lines += ["", _("This downloads up to a few GB and can take several minutes. Install now?")]
    torch_requirement = torch.requirement.specifier if torch is not None else ""
    return InstallPlan(via_extension, torch_requirement, pip, "\n".join(lines))


def slicer_pip_ensure() -> Callable[..., Any] | None:
    """``slicer.packaging.pip_ensure`` (Slicer >= 5.12), or None where Slicer has none (older Slicer, slicer-core)."""
    try:
        from slicer.packaging import pip_ensure
    except ImportError:
        return None
    return pip_ensure


_DETECT: Any = object()


def _install_pip(requirements: list[str], pip_install: Callable[[list[str]], Any], pip_ensure: Any) -> None:
    ensure = slicer_pip_ensure() if pip_ensure is _DETECT else pip_ensure
    if ensure is None:
        pip_install(requirements)
    else:  # our own question was asked already; Slicer's installer shows progress and offers the restart
        ensure(requirements, prompt_install=False, requester=REQUESTER)


def _titles(problems: Sequence[Problem]) -> str:
    return ", ".join(p.requirement.title for p in problems)


def ensure_requirements(confirm: Callable[[str], bool], install_torch: Callable[[str], Any],
                        pip_install: Callable[[list[str]], Any], pytorch_extension: bool,
                        find_spec: Callable[[str], object] = importlib.util.find_spec, *,
                        pip_ensure: Callable[..., Any] | None = _DETECT,
                        version_of: Callable[[str], str] = importlib.metadata.version) -> tuple[str, str]:
    """Ask, then install what is missing or too old, then check again.

    Args:
        confirm: shows the question, True to go on (``slicer.util.confirmOkCancelDisplay``).
        install_torch: installs PyTorch through the PyTorch extension, given the version part (``">=2.4"``); returns
            None when the user or the installer gave up (``PyTorchUtilsLogic().installTorch``).
        pip_install: installs a list of requirement specifiers (``slicer.util.pip_install``); the fallback where
            Slicer has no ``slicer.packaging.pip_ensure``.
        pytorch_extension: the PyTorch extension is installed.
        pip_ensure: Slicer's ``pip_ensure(requirements, prompt_install=False, requester="MedSeg")``; by default
            ``slicer.packaging.pip_ensure`` when this Slicer has it (>= 5.12); None forces ``pip_install``.
        version_of: installed distribution versions (``importlib.metadata.version``).

    Returns:
        (state, message): state is "ready" (nothing to do), "installed", "declined" or "incomplete"; the message is
        for the panel's status line. Installer errors propagate.
    """
    problems = requirement_problems(version_of, find_spec)
    if not problems:
        return "ready", ""
    plan = install_plan(problems, pytorch_extension)
    if not confirm(plan.message):
        return "declined", _("Nothing was installed: MedSeg cannot segment without {names}.").format(
            names=_titles(problems))
    if plan.torch_via_extension and install_torch(plan.torch_requirement) is None:
        return "incomplete", _("PyTorch was not installed (the PyTorch extension's installer stopped).")
    if plan.pip:
        _install_pip(list(plan.pip), pip_install, pip_ensure)
    importlib.invalidate_caches()
    still = requirement_problems(version_of, find_spec)
    if still:
        return "incomplete", _("Still missing or too old after installing: {problems}; restart Slicer and try "
                               "again.").format(problems=", ".join(p.describe() for p in still))
    message = _("Installed {names}.").format(names=_titles(problems))
    loaded = [p for p in problems if p.outdated and p.requirement.module in sys.modules]
    if loaded:
        message += " " + _("Restart Slicer to load the new version of {names}.").format(names=_titles(loaded))
    return "installed", message
