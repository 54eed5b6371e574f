"""MedSeg.py against Resources/UI/MedSeg.ui, read as text (MedSeg.py needs the Slicer application to import).

What Slicer would otherwise only tell at run time: every ``self.ui.<name>`` the module uses is a widget of the .ui
of the expected class; every ``SlicerParameterName`` names a parameter node field, on a widget that the parameter
node wrapper can connect to that field's type (``slicer.parameterNodeWrapper.guiConnectors``), with the same range;
every field meant for the GUI is bound; every MRML widget gets the scene; the module imports no engine code at load.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from module_support import MODULE_FILE, REPO, WIDGETS_DIR, module_sources

# Fields bound by hand in MedSeg.py: their combo boxes list the models found and the labels of the model's card, which
# the wrapper's QComboBox connector (a fixed Choice list) cannot do.
HAND_BOUND = {"modelName", "activationClass"}

# Every widget MedSeg.py reaches through `ui.<name>`, with its class in the .ui.
EXPECTED_CLASSES = {
    "inputVolumeLabel": "QLabel", "channel2Label": "QLabel", "channel3Label": "QLabel",
    "inputVolumeSelector": "qMRMLNodeComboBox", "channel2Selector": "qMRMLNodeComboBox",
    "channel3Selector": "qMRMLNodeComboBox",
    "modelComboBox": "QComboBox", "addCheckpointButton": "QPushButton", "modelInfoLabel": "QLabel",
    "deviceInfoLabel": "QLabel", "installButton": "QPushButton",
    "pruneLevelSpinBox": "QSpinBox", "accurateCheckBox": "QCheckBox", "activationClassComboBox": "QComboBox",
    "segmentButton": "QPushButton", "cancelButton": "QPushButton", "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "overlayComboBox": "QComboBox", "opacitySlider": "ctkSliderWidget", "tableView": "qMRMLTableView",
    "segmentEditorWidget": "qMRMLSegmentEditorWidget", "saveButton": "QPushButton",
    "reviewListWidget": "QListWidget", "reviewNextButton": "QPushButton", "exportButton": "QPushButton",
    "guidedThresholdSlider": "ctkSliderWidget", "guidedAddButton": "QPushButton", "guidedRemoveButton": "QPushButton",
    "correctionsFolderButton": "ctkDirectoryButton", "saveTrainingCaseButton": "QPushButton",
    "finetuneButton": "QPushButton", "finetuneCancelButton": "QPushButton", "finetuneProgressBar": "QProgressBar",
    "finetuneStatusLabel": "QLabel",
}

# Which widget classes the parameter node wrapper connects to which field type (Slicer's guiConnectors.py).
CONNECTABLE = {
    "node": {"qMRMLNodeComboBox"},
    "bool": {"QCheckBox", "ctkCheckBox"},
    "float": {"ctkSliderWidget", "qMRMLSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox", "ctkDoubleSlider",
              "qMRMLSpinBox"},
    "int": {"QSpinBox", "QSlider", "ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox"},
    "enum": {"QComboBox", "ctkComboBox"},
    "path": {"ctkDirectoryButton", "ctkPathLineEdit"},
    "str": {"QLineEdit", "QLabel", "QTextEdit"},
}
NEEDS_BOUNDS = {"ctkSliderWidget", "qMRMLSliderWidget", "QSlider"}  # the wrapper refuses them for unbounded numbers
ENUMS = {"Device"}  # enum field types (MedSegLib.panel)


# ---------------------------------------------------------------------------------------------- reading the two files


def parameter_fields(module) -> dict[str, ast.expr]:
    """{field: annotation} of the @parameterNodeWrapper class."""
    for node in module.body:
        decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", ())]
        if isinstance(node, ast.ClassDef) and "parameterNodeWrapper" in decorators:
            return {item.target.id: item.annotation for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("MedSeg.py has no @parameterNodeWrapper class")


def field_kind(annotation: ast.expr) -> tuple[str, str | None, tuple[float, float] | None]:
    """(kind, node class or None, (min, max) of WithinRange or None) of a field's annotation."""
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
        base, *extras = annotation.slice.elts
        bounds = None
        for extra in extras:
            if isinstance(extra, ast.Call) and ast.unparse(extra.func) == "WithinRange":
                bounds = tuple(float(ast.literal_eval(a)) for a in extra.args)
        kind, node_class, _ = field_kind(base)
        return kind, node_class, bounds
    text = ast.unparse(annotation)
    first = text.split("|")[0].strip()
    if first.startswith("vtkMRML"):
        return "node", first, None
    if first in ENUMS:
        return "enum", None, None
    if first in ("pathlib.Path", "Path"):
        return "path", None, None
    if first in ("bool", "int", "float", "str"):
        return first, None, None
    raise AssertionError(f"field type {text} is not known to this test; add it to CONNECTABLE")


def ui_widgets(tree) -> dict[str, str]:
    """{objectName: class} of every widget of the .ui."""
    names = {}
    for widget in tree.iter("widget"):
        name = widget.get("name")
        assert name not in names, f"two widgets named {name} in MedSeg.ui"
        names[name] = widget.get("class")
    return names


def ui_property(widget, name: str):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop[0]
            if value.tag == "stringlist":
                return [s.text for s in value]
            return value.text
    return None


def ui_bindings(tree) -> dict[str, object]:
    """{parameter name: widget element} from the SlicerParameterName dynamic properties."""
    out = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", f"{widget.get('name')}: SlicerParameterName must be dynamic " \
                                                  f"(stdset=0)"
                assert prop[0].text not in out, f"parameter {prop[0].text} is bound to two widgets"
                out[prop[0].text] = widget
    return out


def used_ui_names(source: str) -> set[str]:
    """Every `ui.<name>` in MedSeg.py (self.ui in the widget, widget.ui in the test)."""
    return set(re.findall(r"\bui\.([A-Za-z_]\w*)", source))


# ---------------------------------------------------------------------------------------------- the tests


def test_every_ui_name_the_module_uses_exists_with_its_class(ui_tree):
    widgets = ui_widgets(ui_tree)
    used = used_ui_names(module_sources())
    assert used, "found no ui.<name> in MedSeg.py"
    unknown = sorted(used - EXPECTED_CLASSES.keys())
    assert not unknown, f"MedSeg.py uses {unknown}: add each to EXPECTED_CLASSES with its widget class"
    for name in sorted(used):
        assert name in widgets, f"MedSeg.py uses ui.{name}, which MedSeg.ui does not have"
        assert widgets[name] == EXPECTED_CLASSES[name], f"ui.{name} is a {widgets[name]} in MedSeg.ui, the module " \
                                                        f"expects a {EXPECTED_CLASSES[name]}"


def test_every_slicer_parameter_name_is_a_field_and_every_gui_field_is_bound(ui_tree, module_ast):
    fields = parameter_fields(module_ast)
    bound = ui_bindings(ui_tree)
    assert sorted(set(bound) - fields.keys()) == [], "SlicerParameterName without a parameter node field"
    assert sorted(fields.keys() - bound.keys() - HAND_BOUND) == [], "parameter node fields that no widget shows"
    assert not HAND_BOUND & bound.keys(), "a hand-bound field also has a SlicerParameterName"
    assert HAND_BOUND <= fields.keys()


@pytest.mark.parametrize("field", sorted(set(parameter_fields(ast.parse(MODULE_FILE.read_text())).keys()) - HAND_BOUND))
def test_each_bound_widget_can_represent_its_field(ui_tree, module_ast, field):
    kind, node_class, bounds = field_kind(parameter_fields(module_ast)[field])
    widget = ui_bindings(ui_tree)[field]
    cls = widget.get("class")
    assert cls in CONNECTABLE[kind], f"{field} ({kind}) is bound to a {cls}; the wrapper connects {kind} to " \
                                     f"{sorted(CONNECTABLE[kind])}"
    if cls in NEEDS_BOUNDS:
        assert bounds is not None, f"{field} on a {cls} needs Annotated[..., WithinRange(lo, hi)]"
    if bounds is not None and ui_property(widget, "minimum") is not None:
        ui_range = (float(ui_property(widget, "minimum")), float(ui_property(widget, "maximum")))
        assert ui_range == bounds, f"{field}: the .ui range {ui_range} differs from WithinRange{bounds}"
    if node_class is not None:
        assert ui_property(widget, "nodeTypes") == [node_class], f"{field}: nodeTypes differ from {node_class}"


def test_every_mrml_widget_gets_the_scene(ui_tree):
    root = ui_tree.getroot().find("widget")
    assert (root.get("class"), root.get("name")) == ("qMRMLWidget", "MedSeg")
    receivers = {c.findtext("receiver") for c in ui_tree.iter("connection")
                 if c.findtext("sender") == "MedSeg" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, cls in ui_widgets(ui_tree).items() if cls.startswith("qMRML") and name != "MedSeg"}
    assert mrml and mrml == receivers


def test_custom_widgets_are_declared(ui_tree):
    declared = {c.findtext("class") for c in ui_tree.iter("customwidget")}
    used = {cls for cls in ui_widgets(ui_tree).values() if not cls.startswith("Q")}
    assert used <= declared, f"undeclared custom widgets: {sorted(used - declared)}"


def test_module_follows_the_template(module_ast):
    classes = {node.name: node for node in module_ast.body if isinstance(node, ast.ClassDef)}
    assert {"MedSeg", "MedSegParameterNode", "MedSegWidget", "MedSegLogic", "MedSegTest"} <= classes.keys()
    source = ast.unparse(module_ast)
    assert "self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)" in source
    assert "self._parameterNode.disconnectGui(self._parameterNodeGuiTag)" in source
    assert "self.parent.categories = ['Segmentation']" in source
    assert "MedSegParameterNode(super().getParameterNode())" in source
    assert 'slicer.util.loadUI(_resourcePath("UI/MedSeg.ui"))' in MODULE_FILE.read_text()


def test_module_loads_no_engine_code(module_ast):
    """Top-level imports: Slicer, Qt, the standard library and the qt-free panel helpers; never torch, the engine
    or the bridge modules that need it (they are imported inside the functions that use them)."""
    allowed = {"logging", "os", "pathlib", "time", "typing", "qt", "vtk", "slicer", "slicer.i18n",
               "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util",
               "MedSegLib.dependencies", "MedSegLib.panel", "__future__", "sys", "collections.abc",
               "MedSegWidgets.common", "MedSegWidgets.learning", "MedSegWidgets.logic", "MedSegWidgets.reloading",
               "MedSegWidgets.results"}
    helpers = [ast.parse(f.read_text(encoding="utf-8")) for f in sorted(WIDGETS_DIR.glob("*.py"))]
    for node in [*module_ast.body, *(n for tree in helpers for n in tree.body)]:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:  # MedSegWidgets' own modules
            names = [f"MedSegWidgets.{node.module}"]
        assert set(names) <= allowed, f"MedSeg.py or MedSegWidgets imports {names} at load time"


def test_the_qt_free_helpers_import_without_torch_and_simpleitk():
    code = ("import sys\n"
            "for name in ('torch', 'SimpleITK', 'safetensors', 'qt', 'medseg.inference', 'medseg.checkpoint'):\n"
            "    sys.modules[name] = None  # importing any of them now fails\n"
            "import MedSegLib.dependencies, MedSegLib.panel, MedSegLib.worker, MedSegLib.finetune_job\n"
            "import MedSegWidgets.reloading\n"
            "print(MedSegLib.panel.Device.label(MedSegLib.panel.Device.GPU))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "MedSegExtension", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "GPU (CUDA)"


def test_cmake_registers_the_self_test():
    text = (REPO / "MedSegExtension" / "CMakeLists.txt").read_text()
    block = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", text, re.S)
    assert block and re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", block.group(1))
    assert "WITH_GENERIC_TESTS" in text
