# -*- i18n: disabled -*-  (a test: Slicer's string extraction must not pick up its examples)
"""The bridge's user-facing text goes through Slicer's translation call, in the form Slicer's extraction finds.

Slicer extracts a Python module's strings with Qt's lupdate after a preprocessing step (``update_translations.py`` in
Slicer's ``Utilities/Scripts``) that rewrites every ``_("literal")`` call into ``translate("Package.module",
"literal")``; lupdate then reads ``translate(context, literal)`` calls. So in ``MedSegLib`` every message a user reads
is ``_("whole sentence with {placeholders}")`` (``from .i18n import tr as _``), formatted after the call. A bare
``tr("...")`` would be extracted with an empty context (lupdate's rule for a ``tr`` call outside a class) and never
match the file's context that ``MedSegLib.i18n.tr`` looks up at run time.

This is a static (AST) check of ``MedSeg/MedSegExtension/MedSegLib``; it needs no Slicer. What counts as user-facing:

* the message of a ``raise`` (``raise ValueError("...")``), unless a ``# no tr`` comment on the statement says it is
  for developers (as Slicer's ``/*no tr*/`` marks C++ strings);
* the text of a progress report (``progress(fraction, "...")``, ``Progress(fraction, "...")``), the status text of
  the background workers;
* the fields of the bridge's records that are shown as they are (:data:`SHOWN_FIELDS`: table column headers...);
* what a function named ``*_message``, ``*_summary``, ``*_text``, ``*_hint`` or ``*_title`` returns.

A file holding Slicer's ``-*- i18n: disabled -*-`` marker (the self-test's checks, read by developers) is skipped, as
Slicer's extraction skips it.
"""

from __future__ import annotations

import ast
import re
import shutil
import string
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[2] / "MedSegExtension" / "MedSegLib"
DISABLED = "-*- i18n: disabled -*-"  # Slicer's marker: update_translations.py leaves such a file out
NO_TR = "# no tr"

PROGRESS_CALLS = {"progress", "report", "_report"}  # (fraction, text), as the workers report
SHOWN_FIELDS = {"Column": ("title", "description"), "Progress": ("message",)}  # record fields shown as they are
TEXT_FUNCTIONS = re.compile(r".*_(message|summary|text|hint|title)$")
WORDS = re.compile(r"[A-Za-z]{2}")
MARKUP = re.compile(r"<[^<>]*>")  # "<br>", "<qt>": tags, not words


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def _dataclass_fields(trees: dict[str, ast.Module]) -> dict[str, list[str]]:
    """Field names, in order, of every class with annotated fields in the bridge (for positional arguments)."""
    fields = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = [s.target.id for s in node.body
                         if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
                if names:
                    fields[node.name] = names
    return fields


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _is_translation(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"


def _has_words(text: str) -> bool:
    return bool(WORDS.search(MARKUP.sub("", text)))


def _untranslated(node: ast.AST | None) -> list[ast.AST]:
    """The pieces of English in a message expression that do not go through ``_()``."""
    if node is None or _is_translation(node):
        return []
    if isinstance(node, ast.Constant):
        return [node] if isinstance(node.value, str) and _has_words(node.value) else []
    if isinstance(node, ast.JoinedStr):
        return [node] if _has_words("".join(v.value for v in node.values if isinstance(v, ast.Constant))) else []
    if isinstance(node, ast.BinOp):
        return _untranslated(node.left) + _untranslated(node.right)
    if isinstance(node, ast.IfExp):
        return _untranslated(node.body) + _untranslated(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _untranslated(node.func.value)  # the template; the values filled in are data
    if isinstance(node, ast.Call) and _callee(node) in {"printable", "str"}:
        return [piece for arg in node.args for piece in _untranslated(arg)]
    return []


def _call_form(call: ast.Call, source: str) -> str | None:
    """What is wrong with a ``_()`` call for Slicer's extraction, or None.

    The preprocessing takes the text from ``_(`` up to the first closing quote of the same kind followed by ``)``,
    and lupdate needs string literals there (adjacent literals are joined; an f-string would be extracted with its
    ``{expressions}`` and a variable not at all).
    """
    if len(call.args) != 1 or call.keywords:
        return "_() takes exactly one argument, the text"
    arg = call.args[0]
    if isinstance(arg, ast.JoinedStr):
        return "_() of an f-string: write _(\"... {name} ...\").format(name=...)"
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return "_() of an expression: lupdate extracts only string literals; pass the literal text"
    segment = ast.get_source_segment(source, call) or ""
    inner = segment[2:].lstrip()
    quote = inner[:3] if inner[:3] in ('"""', "'''") else inner[:1]
    if quote not in ('"', "'", '"""', "'''"):
        return "_() of a prefixed literal (r, b, f): use a plain string"
    end = re.compile(re.escape(quote) + r"\s*\)")
    first = end.search(inner, len(quote) + 1)
    if first is None or first.end() != len(inner):
        return "_() text holds a closing quote before ')': Slicer's extraction would cut the text there"
    return None


def _placeholders(template: str) -> set[str] | None:
    try:
        return {re.split(r"[.\[]", name)[0] for _text, name, _spec, _conv in string.Formatter().parse(template)
                if name is not None}
    except ValueError:
        return None


def _check_format(call: ast.Call) -> str | None:
    """``_("...{a}...").format(a=...)``: the template's placeholders and the names given must match."""
    template = call.func.value.args[0].value
    if call.args or any(k.arg is None for k in call.keywords):
        return None
    wanted, given = _placeholders(template), {k.arg for k in call.keywords}
    if wanted is None:
        return f"_({template[:40]!r}...) is not a valid format template"
    if wanted != given:
        return f"_({template[:40]!r}...).format() fills {sorted(given)}, the text has {sorted(wanted)}"
    return None


def _has_no_tr(node: ast.AST, lines: list[str]) -> bool:
    return any(NO_TR in lines[n - 1] for n in range(node.lineno, node.end_lineno + 1))


def check_module(name: str, source: str, fields: dict[str, list[str]] | None = None) -> list[Finding]:
    """The findings in one module's source (``fields``: the bridge's record classes, see :func:`check_bridge`)."""
    if DISABLED in source:
        return []
    tree = ast.parse(source)
    fields = fields if fields is not None else _dataclass_fields({name: tree})
    lines = source.splitlines()
    found: list[Finding] = []

    def report(node: ast.AST, problem: str) -> None:
        found.append(Finding(name, node.lineno, problem))

    def check_text(node: ast.AST | None, where: str) -> None:
        for piece in _untranslated(node):
            report(piece, f"{where} not translated: wrap it in _(...)")

    uses_translation = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "i18n" and node.level == 1:
            for alias in node.names:
                if alias.name == "tr" and alias.asname != "_":
                    report(node, "import the translation call as Slicer's modules do: from .i18n import tr as _")
                uses_translation |= alias.asname == "_"
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            if not _has_no_tr(node, lines):
                check_text(node.exc.args[0], "error message")
        elif isinstance(node, ast.Call):
            callee = _callee(node)
            if _is_translation(node):
                problem = _call_form(node, source)
                if problem:
                    report(node, problem)
            elif isinstance(node.func, ast.Name) and node.func.id == "tr":
                report(node, "tr(...) is extracted with an empty context; call _(...) (from .i18n import tr as _)")
            elif (callee == "format" and isinstance(node.func, ast.Attribute) and _is_translation(node.func.value)
                  and not _call_form(node.func.value, source)):
                problem = _check_format(node)
                if problem:
                    report(node, problem)
            if callee in PROGRESS_CALLS and len(node.args) > 1:
                check_text(node.args[1], "progress text")
            for field in SHOWN_FIELDS.get(callee, ()):
                names = fields.get(callee, [])
                positional = dict(zip(names, node.args, strict=False))
                value = next((k.value for k in node.keywords if k.arg == field), positional.get(field))
                check_text(value, f"{callee}.{field}")
        elif isinstance(node, ast.FunctionDef) and TEXT_FUNCTIONS.match(node.name):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return):
                    check_text(ret.value, f"text returned by {node.name}()")
    if uses_translation:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "_" and isinstance(node.ctx, ast.Store | ast.Del):
                report(node, "'_' is the translation call here; name this variable (e.g. _label)")
            elif isinstance(node, ast.arg) and node.arg == "_":
                report(node, "'_' is the translation call here; name this argument")
    return found


def check_bridge(folder: Path = BRIDGE) -> list[Finding]:
    """The findings in every module of the bridge package."""
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.py")) if p.name != "i18n.py"}
    trees = {name: ast.parse(source) for name, source in sources.items()}
    fields = _dataclass_fields(trees)
    return [f for name, source in sources.items() for f in check_module(name, source, fields)]


# ---------------------------------------------------------------------------------------------- tests


def test_every_user_facing_message_of_the_bridge_is_translatable():
    assert BRIDGE.is_dir()
    findings = check_bridge()
    assert not findings, "\n".join(map(str, findings))


def test_the_bridge_uses_the_call_slicers_extraction_rewrites():
    """At least the modules known to show text import ``_`` and call it (the check is not vacuous)."""
    for name in ("volumes.py", "tables.py", "dicom_export.py", "finetune_job.py", "training_cases.py"):
        source = (BRIDGE / name).read_text(encoding="utf-8")
        assert "from .i18n import tr as _\n" in source, name
        assert re.search(r"[^_]_\((\s*)[\"']", source), name


def _lupdate() -> str | None:
    """Qt's lupdate from Qt >= 6.3 (the first that reads Python), as Slicer's extraction needs; None if absent."""
    for candidate in (shutil.which("lupdate"), "/usr/lib/qt6/bin/lupdate"):
        if candidate and Path(candidate).is_file():
            version = subprocess.run([candidate, "-version"], capture_output=True, text=True, check=False).stdout
            found = re.search(r"(\d+)\.(\d+)", version)
            if found and (int(found[1]), int(found[2])) >= (6, 3):
                return candidate
    return None


def _spelled_for_lupdate(source: str, context: str) -> str:
    """`source` with each ``_(`` call spelled ``translate("<context>", ``: what Slicer's update_translations.py
    hands to lupdate (its context: ``Package.module``, as ``MedSegLib.i18n.context_of``)."""
    lines = source.encode("utf-8").splitlines(keepends=True)
    calls = sorted(((n.lineno, n.col_offset) for n in ast.walk(ast.parse(source)) if _is_translation(n)), reverse=True)
    for line, col in calls:  # col_offset counts UTF-8 bytes
        text = lines[line - 1]
        assert text[col:col + 2] == b"_("
        lines[line - 1] = text[:col] + f'translate("{context}", '.encode() + text[col + 2:]
    return b"".join(lines).decode("utf-8")


def _translatable(folder: Path) -> dict[str, set[str]]:
    """{context: texts} of the ``_("...")`` calls, as Python reads them."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if DISABLED in source:
            continue
        texts = {n.args[0].value for n in ast.walk(ast.parse(source)) if _is_translation(n)}
        if texts:
            found[f"{folder.name}.{path.stem}"] = texts
    return found


def test_lupdate_extracts_every_text_in_its_files_context(tmp_path):
    lupdate = _lupdate()
    if lupdate is None:
        pytest.skip("Qt's lupdate >= 6.3 is not installed (Debian: apt-get install qt6-l10n-tools)")
    copy = tmp_path / BRIDGE.name
    copy.mkdir()
    for path in BRIDGE.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        if DISABLED not in source:
            (copy / path.name).write_text(_spelled_for_lupdate(source, f"{BRIDGE.name}.{path.stem}"), encoding="utf-8")
    ts = tmp_path / "MedSeg_en-US.ts"
    subprocess.run([lupdate, *sorted(str(p) for p in copy.glob("*.py")), "-ts", str(ts)], check=True,
                   capture_output=True, timeout=120)
    extracted: dict[str, set[str]] = {}
    for context in ET.parse(ts).getroot().iter("context"):
        extracted[context.findtext("name")] = {m.findtext("source") for m in context.iter("message")}
    expected = _translatable(BRIDGE)
    assert sum(map(len, expected.values())) > 100  # the bridge's messages, not a handful
    assert extracted == expected


UNWRAPPED = '''
from .i18n import tr as _

@dataclass(frozen=True)
class Column:
    key: str
    title: str
    description: str

COLUMNS = (Column("volume_ml", "Volume", _("voxel count x voxel volume")),)

def load(path, progress):
    progress(0.5, f"reading {path}")
    if not path:
        raise ValueError("no file given; pick one")
    if path == "-":
        raise ValueError(f"cannot read {path!r} from a pipe")
    if path == "?":
        raise ValueError("internal: no reader registered")  # no tr: a bug, for developers
    for _ in range(3):
        pass
    return tr("read {path}").format(path=path)

def status_message(n):
    return _(f"{n} files read")

def count_text(n):
    return _("{n} file(s) read").format(count=n)

def quoted_text(name):
    return _("segment \\"{name}\\") is empty").format(name=name)
'''


def test_the_check_finds_each_unwrapped_message():
    findings = check_module("example.py", UNWRAPPED)
    problems = {(f.line, f.problem.split(":")[0]) for f in findings}
    assert problems == {
        (10, "Column.title not translated"),
        (13, "progress text not translated"),
        (15, "error message not translated"),
        (17, "error message not translated"),
        (20, "'_' is the translation call here; name this variable (e.g. _label)"),
        (22, "tr(...) is extracted with an empty context; call _(...) (from .i18n import tr as _)"),
        (25, "_() of an f-string"),
        (28, "_('{n} file(s) read'...).format() fills ['count'], the text has ['n']"),
        (31, "_() text holds a closing quote before ')'"),
    }, "\n".join(map(str, findings))


def test_the_wrapped_forms_pass_and_a_disabled_file_is_skipped():
    wrapped = '''
from .i18n import tr as _

def load(path, progress):
    progress(0.5, _("reading {path}").format(path=path))
    raise ValueError(_("cannot read {path!r}: pick another file; "
                       "or convert it first").format(path=path))

def size_text(n):
    return _("{n} MB").format(n=n) if n else _('none ("empty")')
'''
    assert check_module("wrapped.py", wrapped) == []
    assert check_module("selftest.py", "# " + DISABLED + "\n" + UNWRAPPED) == []
