"""MedSeg: U-Net family segmentation in 3D Slicer, with heat-map overlays, a volume table, correction and export.

Slicer's scripted-module template: Module, a typed parameter node, a Widget bound to ``Resources/UI/MedSeg.ui``
(``SlicerParameterName`` properties + ``connectGui``), a Logic facade over the bridge (``MedSegLib``) and a Test.
The engine (``medseg``, PyTorch) is imported only when used, so the module loads without PyTorch and offers to
install it. The work runs in a background thread (``MedSegLib.worker``) polled by a timer; see ARCHITECTURE.md.
The Logic's bridge calls and the panel's Results and "Learn from corrections" parts are in ``MedSegWidgets/``.
"""

import logging
import os
import pathlib
import time
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedSegLib.dependencies import ensure_requirements, missing_requirements, requirement_problems
from MedSegLib.panel import (
    Device,
    activation_choices,
    channel_labels,
    default_model,
    describe_card,
    device_summary,
    done_message,
    html_text,
    input_volumes,
    postprocess_defaults,
    resource_path,
    saved_paths,
    settings_from_parameters,
    warnings_text,
)
from MedSegWidgets.common import fillCombo, nodeId
from MedSegWidgets.learning import CorrectionsMixin
from MedSegWidgets.logic import LogicFacade
from MedSegWidgets.reloading import RELOADED_PACKAGES, forget_modules
from MedSegWidgets.results import ResultsMixin

CHECKPOINTS_SETTING = "MedSeg/Checkpoints"  # the user's added checkpoint files (QSettings)


def _resourcePath(relativePath: str) -> str:
    """``Resources/<relativePath>``: beside the module once installed, ``../Resources`` in the source tree."""
    return str(resource_path(__file__, relativePath))


class MedSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSeg")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSeg developers"]
        self.parent.helpText = _(
            "Segment CT and MRI volumes with U-Net, UNet++, V-Net and Attention U-Net models: pick a volume and a "
            "model, click Segment, look at the Grad-CAM and uncertainty overlays and the volume table, correct the "
            "result with the Segment Editor and save it.<br><br>"
            "Every model carries its <b>model card</b>: architecture, inputs, labels, the data set it was trained on "
            "and its license, and its validation metrics. The panel shows it under the model picker (hover for the "
            "whole card). Bundled models are trained by the MedSeg project on public data sets named in their cards "
            "(the hippocampus models on the Medical Segmentation Decathlon Task04, CC-BY-SA 4.0). "
            "Research use only: not a medical device.")
        self.parent.acknowledgementText = _(
            "Networks after Ronneberger et al. 2015 (U-Net), Zhou et al. 2018 (UNet++), Milletari et al. 2016 "
            "(V-Net) and Oktay et al. 2018 (Attention U-Net); overlap-tile inference after nnU-Net. Sample data: "
            "Medical Segmentation Decathlon (Simpson et al. 2019, Antonelli et al. 2022), CC-BY-SA 4.0.")


@parameterNodeWrapper
class MedSegParameterNode:
    """The panel's state, saved with the scene. ``modelName`` and ``activationClass`` are bound by hand (their lists
    come from the model card); every other field is bound through ``SlicerParameterName`` in MedSeg.ui."""

    inputVolume: vtkMRMLScalarVolumeNode | None
    channel2Volume: vtkMRMLScalarVolumeNode | None
    channel3Volume: vtkMRMLScalarVolumeNode | None
    modelName: str = ""  # a bundled model's name or a checkpoint path
    device: Device = Device.AUTO
    tta: bool = False
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    pruneLevel: Annotated[int, WithinRange(1, 4)] = 4
    accurate: bool = False
    largestComponent: bool = False
    fillHoles: bool = False
    minIslandMl: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    roi: vtkMRMLMarkupsROINode | None
    uncertainty: bool = True
    probabilities: bool = False
    activationClass: str = ""  # a label name of the model, "" for no Grad-CAM
    replacePrevious: bool = True
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputSegmentation: vtkMRMLSegmentationNode | None
    outputTable: vtkMRMLTableNode | None
    outputFolder: pathlib.Path
    exportFolder: pathlib.Path
    exportSeg: bool = True
    exportSr: bool = True
    exportPdf: bool = True
    exportMeshes: bool = True
    exportToDatabase: bool = False


class MedSegWidget(ResultsMixin, CorrectionsMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choices = {}  # model key -> MedSegLib.panel.ModelChoice
        self._task = None  # the running MedSegLib.worker.BackgroundTask
        self._run = None  # (RunInputs, RunSettings) of the running task
        self._shown = (None, None)  # (model key, segmentation node ID) the panel shows
        self._noModel = ""  # why the model list is empty
        self._applying = False
        self._review = (None, ())  # (segmentation node ID, medseg.review.ReviewRegion list) of the last run

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(_resourcePath("UI/MedSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.timeout.connect(self._poll)
        self._tableTimer = qt.QTimer()  # debounces table refreshes while the user edits
        self._tableTimer.setSingleShot(True)
        self._tableTimer.setInterval(500)
        self._tableTimer.timeout.connect(self._refreshTable)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.addCheckpointButton.clicked.connect(self.onAddCheckpoint)
        self.ui.installButton.clicked.connect(self.onInstall)
        self.ui.saveButton.clicked.connect(self.onSave)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelPicked)
        self.ui.activationClassComboBox.connect("currentIndexChanged(int)", self._onActivationPicked)
        self.ui.overlayComboBox.connect("currentIndexChanged(int)", self._onOverlayPicked)
        self.ui.opacitySlider.connect("valueChanged(double)", self.logic.setOverlayOpacity)
        self.ui.reviewListWidget.connect("currentRowChanged(int)", self._onReviewPicked)
        self.ui.reviewNextButton.clicked.connect(self.onReviewNext)
        self.ui.guidedThresholdSlider.connect("valueChanged(double)", self.onGuidedThreshold)
        self.ui.guidedAddButton.clicked.connect(lambda: self.onGuidedClick(add=True))
        self.ui.guidedRemoveButton.clicked.connect(lambda: self.onGuidedClick(add=False))
        self.setupCorrections()
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pollTimer.stop()
        self._tableTimer.stop()
        self.cleanupCorrections()
        self.removeObservers()

    def onReload(self) -> None:
        """Slicer's Reload re-reads MedSeg.py only: forget the loaded models and MedSeg's packages first, so that they
        are imported afresh too."""
        self.logic.clearCache()
        forget_modules(RELOADED_PACKAGES)
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()  # its volume is going away: nothing will be applied
        self.removeObservers(self._onSegmentationEdited)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ---------------------------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.modelName and self._choices:
            self._pickModel(default_model(self._choices))
        if str(p.outputFolder) in ("", "."):
            p.outputFolder = pathlib.Path.home() / "MedSeg"

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode == inputParameterNode:
            return
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._shown = (None, None)
        if self._parameterNode:
            # The .ui sets a "SlicerParameterName" dynamic property on every widget that is connected here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        model, segmentationId = self._shown
        if p.modelName != model:
            self._showModel(p.modelName)
        if nodeId(p.outputSegmentation) != segmentationId:
            self._showResult(p.outputSegmentation)
        self.ui.tableView.setMRMLTableNode(p.outputTable)
        self._updateButtons()

    def _card(self):
        choice = self._choices.get(self._parameterNode.modelName) if self._parameterNode else None
        return choice.card if choice is not None else None

    def _showModel(self, key: str) -> None:
        """The model picker, its card text, the channel selectors, UNet++ options and Grad-CAM classes."""
        self._shown = (key, self._shown[1])
        if key and key not in self._choices and os.path.isfile(key) and not missing_requirements():
            self.addCheckpoint(key, remember=False)  # a checkpoint file named in a saved scene
            return
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.setCurrentIndex(combo.findData(key) if key else -1)
        combo.blockSignals(False)
        choice = self._choices.get(key)
        card = choice.card if choice is not None else None
        self.ui.modelInfoLabel.toolTip = html_text(choice.tooltip) if choice else ""
        self.ui.modelInfoLabel.text = describe_card(card) if card else (
            _("Model {key} is not available: pick another one.").format(key=key) if key and self._choices
            else self._noModel if not self._choices else _("No model selected."))
        try:
            labels = channel_labels(card)
        except ValueError as exc:
            self.ui.modelInfoLabel.text = str(exc)
            labels = channel_labels(None)
        for text, label, selector in zip(labels, (self.ui.inputVolumeLabel, self.ui.channel2Label,
                                                  self.ui.channel3Label),
                                         (self.ui.inputVolumeSelector, self.ui.channel2Selector,
                                          self.ui.channel3Selector), strict=True):
            label.text = text or label.text
            label.visible = selector.visible = bool(text)
        unetpp = card is not None and card.architecture == "unetpp"
        self.ui.pruneLevelSpinBox.enabled = self.ui.accurateCheckBox.enabled = unetpp
        classes = activation_choices(card)
        selected = self._parameterNode.activationClass if any(c[1] == self._parameterNode.activationClass
                                                              for c in classes) else ""
        fillCombo(self.ui.activationClassComboBox, [(_("none"), "", ""), *classes], selected)

    def _onModelPicked(self, index: int) -> None:
        if self._parameterNode is not None:
            self._pickModel(self.ui.modelComboBox.itemData(index) or "")

    def _pickModel(self, key: str) -> None:
        """The user's model choice: the parameter node's model, and its card's default post-processing in the
        checkboxes (a saved scene's model and checkboxes are restored as saved, not through here)."""
        choice = self._choices.get(key)
        for name, value in postprocess_defaults(choice.card if choice else None).items():
            setattr(self._parameterNode, name, value)
        self._parameterNode.modelName = key

    def _onActivationPicked(self, index: int) -> None:
        if self._parameterNode is not None:
            self._parameterNode.activationClass = self.ui.activationClassComboBox.itemData(index) or ""

    def _updateButtons(self) -> None:
        p, running = self._parameterNode, self._task is not None
        if p is None:
            return
        missing = [] if p.inputVolume else [_("an input volume")]
        missing += [] if self._card() else [_("a model")]
        self.ui.segmentButton.enabled = not running and not missing
        self.ui.segmentButton.toolTip = (_("Pick {what} first").format(what=" and ".join(missing)) if missing
                                         else _("Segment the input volume with the model."))
        self.ui.cancelButton.enabled = running and not self._task.cancelled
        self.ui.saveButton.enabled = p.outputSegmentation is not None and not running
        self.ui.exportButton.enabled = p.outputSegmentation is not None and not running
        self._updateCorrectionsButtons()

    # -- models and dependencies ------------------------------------------------------------------------------------
    def refreshModels(self) -> None:
        """The model picker (bundled models, then the user's checkpoints) and the device line."""
        problems = requirement_problems()
        self.ui.installButton.visible = bool(problems)
        choices, devices = [], []
        if problems:
            self._noModel = _("{problems}: click Install.").format(problems=", ".join(p.describe() for p in problems))
        else:
            try:
                choices, problems = self.logic.modelChoices(self._savedCheckpoints(), self._modelsFolder())
                devices = self.logic.availableDevices()
                self._noModel = _("No model is bundled yet: add a checkpoint (.safetensors).")
            except Exception as exc:  # a broken PyTorch installation: the panel still opens
                logging.error("MedSeg: the engine cannot be loaded: %s", exc)
                problems, self._noModel = [], _("The engine cannot be loaded: {error}").format(error=exc)
            for problem in problems:
                logging.warning("MedSeg: checkpoint skipped: %s", problem)
        self._choices = {c.key: c for c in choices}
        fillCombo(self.ui.modelComboBox, [(c.text, c.key, c.tooltip) for c in choices])
        self.ui.deviceInfoLabel.text = device_summary(devices) if devices else ""
        self._shown = (None, self._shown[1])
        if self._parameterNode is not None:
            self._onParameterNodeModified()

    def _savedCheckpoints(self) -> list:
        return saved_paths(qt.QSettings().value(CHECKPOINTS_SETTING))

    def addCheckpoint(self, path: str, remember: bool = True) -> bool:
        """Validate a checkpoint file (its card), add it to the model picker and select it; an nnU-Net results
        folder (or its plans.json or a fold's checkpoint_*.pth) is converted to a MedSeg checkpoint first."""
        from MedSegLib.nnunet_import import checkpoint_for, imported_models_dir

        try:
            path = checkpoint_for(path, imported_models_dir(slicer.app.slicerUserSettingsFilePath))
            self.logic.readCard(path)
        except (OSError, ValueError) as exc:
            self._showError(_("Not a usable MedSeg checkpoint"), exc)
            return False
        if remember:
            qt.QSettings().setValue(CHECKPOINTS_SETTING, saved_paths([*self._savedCheckpoints(), path]))
        if path not in self._choices:
            self._choices.update({c.key: c for c in self.logic.modelChoices([path])[0] if c.key == path})
            choices = self._choices.values()
            fillCombo(self.ui.modelComboBox, [(c.text, c.key, c.tooltip) for c in choices], path)
        if self._parameterNode is not None:
            self._shown = (None, self._shown[1])
            self._pickModel(path)
            self._onParameterNodeModified()
        return True

    def onAddCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Add a MedSeg checkpoint"), "",
                                              _("MedSeg checkpoints (*.safetensors);;All files (*)"))
        if path and self._ensureEngine():
            self.addCheckpoint(path)

    def onInstall(self) -> None:
        if self._ensureEngine():
            self.initializeParameterNode()

    def _ensureEngine(self) -> bool:
        """Install the engine's requirements if missing, after asking (never at import)."""

        def installTorch(versionRequirement):
            import PyTorchUtils  # the PyTorch extension: it picks the CUDA build for the GPU driver

            return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                 torchVersionRequirement=versionRequirement)

        try:
            state, message = ensure_requirements(
                lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle=_("MedSeg needs Python packages")),
                installTorch, slicer.util.pip_install, hasattr(slicer.modules, "pytorchutils"))
        except Exception as exc:
            self._showError(_("Installing the Python packages failed"), exc)
            return False
        if message:
            self.ui.statusLabel.text = message
        if state == "installed":
            self.refreshModels()
        return state in ("ready", "installed")

    # -- Segment, progress, Cancel ----------------------------------------------------------------------------------
    def onSegment(self) -> None:
        if self._task is not None or not self._ensureEngine():
            return
        p = self._parameterNode
        try:
            choice = self._choices.get(p.modelName)
            if choice is None:
                raise ValueError(_("no model selected; pick one in the Model list (or add a checkpoint file)"))
            settings = settings_from_parameters(p, choice.card)
            inputs = self.logic.readInputs(input_volumes(p, choice.card), choice.card, p.roi)
            self._task = self.logic.startSegmentation(inputs, settings)
        except Exception as exc:
            self._showError(_("MedSeg cannot segment"), exc)
            return
        self._run = (inputs, settings)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self._updateButtons()
        self._pollTimer.start()

    def onCancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = _("Cancelling (within one window)...")
            self._updateButtons()

    def _poll(self) -> None:
        """Main thread, every 100 ms: progress, then the outcome once the worker has finished."""
        task = self._task
        if task is None:
            self._pollTimer.stop()
            return
        progress = task.progress()
        self.ui.progressBar.value = round(100 * progress.fraction)
        if not task.cancelled:
            self.ui.statusLabel.text = progress.message
        outcome = task.take()
        if outcome is None:
            return
        self._pollTimer.stop()
        self._task = None
        (inputs, settings), self._run = self._run, None
        if outcome.state == "done":
            self._apply(inputs, outcome, settings)
        elif outcome.state == "cancelled":
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled: nothing was changed.")
        else:
            self._showError(_("Segmentation failed; nothing was changed"), outcome.error, outcome.traceback)
        if self._parameterNode is not None:
            self._updateButtons()

    def _apply(self, inputs, outcome, settings) -> None:
        self._applying = True
        try:
            applied = self.logic.apply(inputs, outcome.result, settings)
        except Exception as exc:
            self._showError(_("The result could not be added to the scene; nothing was changed"), exc)
            return
        finally:
            self._applying = False
            self._tableTimer.stop()
        p = self._parameterNode or self.logic.getParameterNode()  # the user may have left the module meanwhile
        p.outputTable = slicer.mrmlScene.GetNodeByID(applied.table_id)
        p.outputSegmentation = slicer.mrmlScene.GetNodeByID(applied.segmentation_id)
        self._listOverlays(applied.shown_overlay)
        review = outcome.result.review
        self._listReview(applied.segmentation_id, review.regions if review is not None else ())
        warnings = outcome.result.warnings
        self.ui.statusLabel.text = done_message(outcome.seconds, outcome.result.info.get("device", settings.device),
                                                warnings)
        if warnings:
            slicer.util.warningDisplay(warnings_text(warnings), windowTitle=_("MedSeg: check the input"))

    def _showError(self, what: str, exc, details: str = "") -> None:
        message = f"{what}: {exc}"
        self.ui.statusLabel.text = message
        if details:
            logging.error("%s\n%s", message, details)
        slicer.util.errorDisplay(message, windowTitle=_("MedSeg"), **({"detailedText": details} if details else {}))


class MedSegLogic(LogicFacade, ScriptedLoadableModuleLogic):
    """A thin facade over the bridge (``MedSegLib``) for the panel and for scripts (``MedSegWidgets.logic``); imports
    the engine when used."""

    def __init__(self, cache=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        LogicFacade.__init__(self, cache)

    def getParameterNode(self):
        return MedSegParameterNode(super().getParameterNode())


class MedSegTest(ScriptedLoadableModuleTest):
    """Loads the bundled sample volume, segments it on the CPU with the bundled hippocampus model (or a tiny random
    checkpoint when none is bundled), and checks segments, overlays and table against the engine alone."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MedSegLib.selftest import skip_reason

        reason = skip_reason(slicer.app.testingEnabled(), missing_requirements())
        if reason:  # CTest: nobody to answer the install question, and no PyTorch download in a test
            self.skipTest(reason)
        self.setUp()
        self.test_logic_on_sample()
        self.setUp()
        self.test_panel_runs_in_background()

    def _sample(self):
        from MedSegLib import selftest

        slicer.util.selectModule("MedSeg")  # in testing mode only with the requirements there: runTest skips otherwise
        self.assertTrue(slicer.modules.medseg.widgetRepresentation().self()._ensureEngine(), "no PyTorch")
        volume = slicer.util.loadVolume(str(selftest.sample_path()))
        folder = os.path.join(slicer.app.temporaryPath, "MedSegTest")
        os.makedirs(folder, exist_ok=True)
        model, bundled = selftest.self_test_model(folder, slicer.util.arrayFromVolume(volume))
        return volume, model, bundled

    def test_logic_on_sample(self):
        from MedSegLib import selftest
        from MedSegLib.run import ModelCache

        self.delayDisplay("Segmenting the sample through the bridge")
        volume, model, bundled = self._sample()
        report = selftest.check_run(slicer.mrmlScene, volume, model, "cpu", ModelCache(), bundled)
        self.delayDisplay(f"Passed: {report}")

    def test_panel_runs_in_background(self):
        from MedSegLib.tables import table_rows

        volume, model, bundled = self._sample()
        widget = slicer.modules.medseg.widgetRepresentation().self()
        if not bundled:
            self.assertTrue(widget.addCheckpoint(model, remember=False))
        p = widget._parameterNode
        p.inputVolume, p.modelName, p.device, p.activationClass = volume, model, Device.CPU, ""
        for cancel in (True, False):
            nodes = slicer.mrmlScene.GetNumberOfNodes()
            widget.ui.segmentButton.click()
            self.assertIsNotNone(widget._task, widget.ui.statusLabel.text)
            if cancel:
                widget.ui.cancelButton.click()
            for _i in range(1200):  # at most 2 min; the GUI keeps processing events meanwhile
                if widget._task is None:
                    break
                slicer.app.processEvents()
                time.sleep(0.1)
            self.assertIsNone(widget._task, "the run did not finish in 2 minutes")
            if cancel:
                self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes, "a cancelled run changed the scene")
        segmentation = p.outputSegmentation
        self.assertIsNotNone(segmentation, widget.ui.statusLabel.text)
        self.assertEqual(len(table_rows(p.outputTable)), segmentation.GetSegmentation().GetNumberOfSegments())
        self.assertTrue(widget.ui.saveTrainingCaseButton.enabled, "a result but Save as training case is disabled")
        self.delayDisplay("Panel test passed")

