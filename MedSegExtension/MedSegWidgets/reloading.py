"""The panel's Reload: forget MedSeg's own packages so that Slicer's reload of ``MedSeg.py`` imports them afresh.

Slicer's "Reload" re-executes only the module file; the packages it imports (``MedSegWidgets``, ``MedSegLib``,
``medseg``) would stay as first imported. Standard library only, so it is tested without Slicer.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

# In dependency order, dependents first: the panel's helpers use the bridge, which uses the engine.
RELOADED_PACKAGES = ("MedSegWidgets", "MedSegLib", "medseg")


def forget_modules(packages: Sequence[str] = RELOADED_PACKAGES,
                   modules: MutableMapping[str, Any] | None = None) -> list[str]:
    """Remove each package and its submodules from `modules` (``sys.modules``), package by package in the given
    order, submodules before their package; returns the names removed, in that order."""
    modules = sys.modules if modules is None else modules
    removed = []
    for package in packages:
        names = [n for n in list(modules) if n == package or n.startswith(package + ".")]
        for name in sorted(names, key=lambda n: (-n.count("."), n)):
            modules.pop(name, None)
            removed.append(name)
    return removed
