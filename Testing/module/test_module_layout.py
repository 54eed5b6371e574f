"""The module's files without the Slicer application: MedSeg.py stays short, CMake installs every Python file the
module imports, Reload forgets MedSeg's packages (dependents first), and the self-test skips in testing mode when
PyTorch is missing instead of installing it."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys

import pytest
from module_support import MODULE_FILE, REPO, WIDGETS_DIR

from MedSegWidgets.reloading import RELOADED_PACKAGES, forget_modules

EXTENSION = REPO / "MedSegExtension"
MAX_MODULE_LINES = 600


def _cmake_patterns() -> list[str]:
    text = (EXTENSION / "CMakeLists.txt").read_text()
    block = re.search(r"file\(GLOB_RECURSE MODULE_PYTHON_SCRIPTS\s+RELATIVE \S+ CONFIGURE_DEPENDS\s+(.*?)\)", text,
                      re.S)
    assert block, "CMakeLists.txt has no file(GLOB_RECURSE MODULE_PYTHON_SCRIPTS ...)"
    return [p.replace("${MODULE_NAME}", "MedSeg") for p in block.group(1).split()]


def _globbed(relative: str, patterns: list[str]) -> bool:
    """GLOB_RECURSE: `dir/*.py` matches .py files in dir and all its subfolders."""
    for pattern in patterns:
        folder, _, name = pattern.rpartition("/")
        if not folder and fnmatch.fnmatch(relative, name):
            return True
        if folder and relative.startswith(folder + "/") and fnmatch.fnmatch(relative.rpartition("/")[2], name):
            return True
    return False


def _local_packages(files) -> set[str]:
    """The top-level packages of MedSegExtension/ that these files import."""
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            found |= {n.split(".")[0] for n in names if (EXTENSION / n.split(".")[0] / "__init__.py").is_file()}
    return found


def test_the_module_file_stays_under_600_lines():
    lines = len(MODULE_FILE.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_MODULE_LINES, f"MedSeg.py has {lines} lines; move widget helpers into MedSegWidgets/"


def test_cmake_installs_every_python_file_the_module_imports():
    patterns = _cmake_patterns()
    packages = _local_packages([MODULE_FILE, *WIDGETS_DIR.glob("*.py")])
    assert {"MedSegWidgets", "MedSegLib", "medseg"} <= packages
    files = [MODULE_FILE, *(f for p in packages for f in (EXTENSION / p).rglob("*.py"))]
    missing = [str(f.relative_to(EXTENSION)) for f in files
               if not _globbed(f.relative_to(EXTENSION).as_posix(), patterns)]
    assert missing == [], f"not in MODULE_PYTHON_SCRIPTS of CMakeLists.txt: {missing}"
    assert not _globbed("MedSegWeb/app.py", patterns)  # the check can fail


def test_forget_modules_removes_packages_dependents_first_and_nothing_else():
    modules = {name: object() for name in ("medseg", "medseg.train", "medseg.train.finetune", "MedSegLib",
                                           "MedSegLib.run", "MedSegWidgets", "MedSegWidgets.logic", "medsegx",
                                           "MedSegLibrary", "numpy")}
    removed = forget_modules(RELOADED_PACKAGES, modules)
    assert removed == ["MedSegWidgets.logic", "MedSegWidgets", "MedSegLib.run", "MedSegLib",
                       "medseg.train.finetune", "medseg.train", "medseg"]
    assert sorted(modules) == ["MedSegLibrary", "medsegx", "numpy"]


def test_after_forget_modules_the_packages_are_imported_afresh():
    code = ("import MedSegLib.panel as old, medseg.text\n"
            "from MedSegWidgets.reloading import forget_modules\n"
            "forget_modules()\n"
            "import MedSegLib.panel as new, sys\n"
            "print(old is not new, 'medseg.text' in sys.modules, old.Device is not new.Device)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=EXTENSION, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]  # medseg.text: imported again by the new panel


def _method(class_name: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_reload_clears_the_model_cache_and_forgets_the_packages_before_slicers_reload():
    calls = [ast.unparse(s.value.func) for s in _method("MedSegWidget", "onReload").body
             if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)]
    assert calls == ["self.logic.clearCache", "forget_modules", "ScriptedLoadableModuleWidget.onReload"]


def test_the_self_test_checks_for_a_skip_before_anything_else():
    body = [ast.unparse(s) for s in _method("MedSegTest", "runTest").body]
    assert body[1] == "reason = skip_reason(slicer.app.testingEnabled(), missing_requirements())"
    assert body[2].startswith("if reason:") and "self.skipTest(reason)" in body[2]


def test_skip_reason_in_testing_mode_only():
    pytest.importorskip("slicer", reason="MedSegLib.selftest needs the real Slicer core: pip install slicer-core")
    from MedSegLib.dependencies import REQUIREMENTS
    from MedSegLib.selftest import skip_reason

    torch = next(r for r in REQUIREMENTS if r.module == "torch")
    reason = skip_reason(True, [torch])
    assert reason.startswith(f"{torch.title} not installed: the self-test installs nothing in testing mode")
    assert skip_reason(False, [torch]) is None and skip_reason(True, []) is None
