"""Tests of the Slicer module without the Slicer application: the panel file and the parameter node (read with
xml.etree and ast: MedSeg.py imports qt and cannot be imported here), the qt-free helpers of MedSegLib (worker,
panel, dependencies, self-test checks), and the self-test's checks on the real Slicer core (slicer-core)."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

import pytest
from module_support import MODULE_FILE, UI_FILE


@pytest.fixture(scope="session")
def ui_tree() -> ET.ElementTree:
    return ET.parse(UI_FILE)


@pytest.fixture(scope="session")
def module_ast() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


@pytest.fixture
def scene():
    """A fresh scene as the application has it (color tables, subject hierarchy, three slice views)."""
    pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")
    from MedSegLib.headless import application_scene

    with application_scene() as s:
        yield s
