"""The panel's "Learn from corrections" part: Save as training case, and Fine-tune on corrections in the background
with its progress bar and Cancel (mixed into ``MedSeg.MedSegWidget``). It binds widgets to the bridge calls of the
logic (``MedSegLib.training_cases``, ``MedSegLib.finetune_job``) and keeps the two folders in Slicer's settings.
"""

import qt
import slicer
from slicer.i18n import tr as _

POLL_MS = 250


class CorrectionsMixin:
    """Methods of ``MedSegWidget`` for learning from corrections (they use its ``ui``, ``logic``, ``_choices``)."""

    def setupCorrections(self) -> None:
        self._finetune = None  # the running fine-tuning MedSegLib.worker.BackgroundTask
        self._finetuneTimer = qt.QTimer()
        self._finetuneTimer.setInterval(POLL_MS)
        self._finetuneTimer.timeout.connect(self._pollFinetune)
        self.ui.correctionsFolderButton.directory = self._correctionsRoot()
        self.ui.correctionsFolderButton.connect("directoryChanged(QString)", self._onCorrectionsRootChanged)
        self.ui.saveTrainingCaseButton.clicked.connect(self.onSaveTrainingCase)
        self.ui.finetuneButton.clicked.connect(self.onFinetune)
        self.ui.finetuneCancelButton.clicked.connect(self.onFinetuneCancel)

    def cleanupCorrections(self) -> None:
        if self._finetune is not None:
            self._finetune.cancel()  # a cancelled job writes no checkpoint
        self._finetuneTimer.stop()

    def _correctionsRoot(self) -> str:
        from MedSegLib.finetune_job import CORRECTIONS_SETTING, default_corrections_root

        return str(qt.QSettings().value(CORRECTIONS_SETTING) or default_corrections_root())

    def _modelsFolder(self) -> str:
        from MedSegLib.finetune_job import MODELS_SETTING, default_models_folder

        return str(qt.QSettings().value(MODELS_SETTING) or default_models_folder())

    def _onCorrectionsRootChanged(self, folder: str) -> None:
        from MedSegLib.finetune_job import CORRECTIONS_SETTING

        qt.QSettings().setValue(CORRECTIONS_SETTING, folder)

    def _modelKey(self, cardName):
        """The picker's key (bundled name or checkpoint path) of the model named `cardName`, or None."""
        return next((c.key for c in self._choices.values() if c.card.name == cardName), None)

    def _updateCorrectionsButtons(self) -> None:
        p, running = self._parameterNode, self._finetune is not None
        result = p.outputSegmentation if p is not None else None
        self.ui.saveTrainingCaseButton.enabled = bool(self.logic.resultModel(result)) and self._task is None
        self.ui.finetuneButton.enabled = not running and self._card() is not None
        self.ui.finetuneCancelButton.enabled = running and not self._finetune.cancelled

    def onSaveTrainingCase(self) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        try:
            model = self._modelKey(self.logic.resultModel(segmentation))
            files = self.logic.saveTrainingCase(segmentation, self._correctionsRoot(), model)
        except Exception as exc:
            self._showError(_("Not saved as a training case; nothing was written"), exc)
            return
        folder = files["dataset"].parent
        self.ui.finetuneStatusLabel.text = _("Saved training case {case} in {folder} ({n} cases there)").format(
            case=files["image"].name, folder=folder, n=self.logic.countCases(folder))

    def onFinetune(self) -> None:
        card = self._card()
        if self._finetune is not None or card is None or not self._ensureEngine():
            return
        start = self.logic.correctionsFolder(self._correctionsRoot(), card.name)
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Fine-tune {model} on the corrections in").format(model=card.name), str(start))
        if not folder:
            return
        device = self._parameterNode.device
        try:
            self._finetune = self.logic.startFinetune(self._parameterNode.modelName, folder, self._modelsFolder(),
                                                      device=str(getattr(device, "value", device)))
        except Exception as exc:
            self._showError(_("MedSeg cannot fine-tune"), exc)
            return
        self.ui.finetuneProgressBar.value = 0
        self.ui.finetuneStatusLabel.text = _("Fine-tuning {model} on {n} cases...").format(
            model=card.name, n=self.logic.countCases(folder))
        self._updateButtons()
        self._finetuneTimer.start()

    def onFinetuneCancel(self) -> None:
        if self._finetune is None:
            return
        self._finetune.cancel()
        self.ui.finetuneStatusLabel.text = (_("Cancelling at the next step...") if self._finetune.cancelled
                                            else _("Too late to cancel: the model is being saved."))
        self._updateButtons()

    def _pollFinetune(self) -> None:
        """Main thread, every 250 ms: the fine-tuning's progress, then its outcome once it has finished."""
        task = self._finetune
        if task is None:
            self._finetuneTimer.stop()
            return
        progress = task.progress()
        self.ui.finetuneProgressBar.value = round(100 * progress.fraction)
        if not task.cancelled:
            self.ui.finetuneStatusLabel.text = progress.message
        outcome = task.take()
        if outcome is None:
            return
        self._finetuneTimer.stop()
        self._finetune = None
        if outcome.state == "done":
            self.ui.finetuneStatusLabel.text = self.logic.finetuneSummary(outcome.result)
            self.refreshModels()
            if self._parameterNode is not None:
                self._parameterNode.modelName = str(outcome.result.path)  # the new model, ready to segment
        elif outcome.state == "cancelled":
            self.ui.finetuneProgressBar.value = 0
            self.ui.finetuneStatusLabel.text = _("Cancelled: no model was saved.")
        else:
            self.ui.finetuneStatusLabel.text = _("Fine-tuning failed; no model was saved.")
            self._showError(_("Fine-tuning failed; no model was saved"), outcome.error, outcome.traceback)
        if self._parameterNode is not None:
            self._updateButtons()
