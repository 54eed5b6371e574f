"""The panel's Results part: the result shown, its review list, probability-guided edits, overlays, the volume
table after edits, Save and Export (mixed into ``MedSeg.MedSegWidget``; every bridge call goes through its logic).
"""

import logging

import slicer
from slicer.i18n import tr as _

from MedSegLib.panel import overlay_label, review_item_text

from .common import fillCombo, nodeId


class ResultsMixin:
    """Methods of ``MedSegWidget`` for the result it shows (they use its ``ui``, ``logic`` and parameter node)."""

    def _showResult(self, segmentation) -> None:
        """The segment editor, the edit observations, the table and the overlay list follow the result shown."""
        self._shown = (self._shown[0], nodeId(segmentation))
        if self._review[0] != nodeId(segmentation):  # the list belongs to the run that made it
            self._listReview(None, ())
        self.removeObservers(self._onSegmentationEdited)
        editor = self.ui.segmentEditorWidget
        editor.setSegmentationNode(segmentation)
        if segmentation is not None:
            editor.setSourceVolumeNode(self.logic.sourceVolume(segmentation) or self._parameterNode.inputVolume)
            for event in self.logic.editEvents():
                self.addObserver(segmentation, event, self._onSegmentationEdited)
            table = self.logic.resultTable(segmentation)
            if table is not None and nodeId(self._parameterNode.outputTable) != table.GetID():
                self._parameterNode.outputTable = table
        self._listOverlays()

    def _listReview(self, segmentationId, regions) -> None:
        self._review = (segmentationId, tuple(regions))
        self.ui.reviewListWidget.clear()
        for region in regions:
            self.ui.reviewListWidget.addItem(review_item_text(region))
        self.ui.reviewNextButton.enabled = bool(regions)

    def _onReviewPicked(self, row: int) -> None:
        regions = self._review[1]
        if 0 <= row < len(regions):
            self.logic.jumpTo(regions[row].centroid_ras)

    def onReviewNext(self) -> None:
        regions = self._review[1]
        row = self.ui.reviewListWidget.currentRow
        ids = [region.id for region in regions]
        following = self.logic.nextRegion(ids, ids[row] if 0 <= row < len(ids) else None)
        if following is not None:
            self.ui.reviewListWidget.setCurrentRow(ids.index(following))  # jumps through currentRowChanged

    def _guidedTarget(self):
        """(segmentation, segment ID) that the guided edits change: the shown result's selected segment."""
        p = self._parameterNode
        segmentation = p.outputSegmentation if p else None
        segmentId = self.ui.segmentEditorWidget.currentSegmentID() if segmentation is not None else ""
        if not segmentId:
            raise ValueError(_("select a segment of a result in the segment editor first"))
        return segmentation, segmentId

    def onGuidedThreshold(self, value: float) -> None:
        try:
            segmentation, segmentId = self._guidedTarget()
            self.logic.guidedThreshold(segmentation, segmentId, value, self.ui.segmentEditorWidget.saveStateForUndo)
        except ValueError as exc:  # not modal: the slider moves often
            self.ui.statusLabel.text = _("Threshold not applied: {error}").format(error=exc)

    def onGuidedClick(self, add: bool) -> None:
        try:
            segmentation, segmentId = self._guidedTarget()
            region = self.logic.guidedClick(segmentation, segmentId, self.logic.crosshairRAS(), add,
                                            self.ui.guidedThresholdSlider.value,
                                            self.ui.segmentEditorWidget.saveStateForUndo)
        except ValueError as exc:
            self._showError(_("Nothing changed"), exc)
            return
        self.ui.statusLabel.text = (_("Nothing at the crosshair: move it onto the region") if not region.any() else
                                    _("{count} voxels changed").format(count=int(region.sum())))

    def _onSegmentationEdited(self, caller=None, event=None) -> None:
        if not self._applying:
            self._tableTimer.start()  # restarts: the table is measured 0.5 s after the last edit

    def _refreshTable(self) -> None:
        if self._task is not None:
            self._tableTimer.start()  # measure once the run is over
            return
        p = self._parameterNode or self.logic.getParameterNode()  # edits in the Segment Editor module count too
        if p.outputSegmentation is None:
            return
        try:
            self.logic.recomputeTable(p.outputSegmentation, p.outputTable)
        except Exception as exc:  # not modal: edits come in bursts
            logging.warning("MedSeg: volume table not updated: %s", exc)
            self.ui.statusLabel.text = _("Volume table not updated: {error}").format(error=exc)

    def _listOverlays(self, selected=None) -> None:
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        overlays = self.logic.overlays(segmentation)
        fillCombo(self.ui.overlayComboBox, [(_("none"), "", ""), *((overlay_label(kind), node.GetID(), "")
                                                                   for kind, node in overlays.items())],
                   overlays[selected].GetID() if selected in overlays else "")

    def _onOverlayPicked(self, index: int) -> None:
        node = slicer.mrmlScene.GetNodeByID(self.ui.overlayComboBox.itemData(index) or "")
        p = self._parameterNode
        volume = self.logic.sourceVolume(p.outputSegmentation) if p and p.outputSegmentation else None
        self.logic.showOverlay(node, p.overlayOpacity if p else 0.5, volume)

    def onSave(self) -> None:
        p = self._parameterNode
        try:
            try:
                files = self.logic.save(p.outputFolder, p.outputSegmentation, p.outputTable, overwrite=False)
            except FileExistsError as exc:
                if not slicer.util.confirmOkCancelDisplay(_("{error}\n\nReplace them?").format(error=exc)):
                    return
                files = self.logic.save(p.outputFolder, p.outputSegmentation, p.outputTable, overwrite=True)
        except Exception as exc:
            self._showError(_("Saving failed; no file was written"), exc)
            return
        self.ui.statusLabel.text = _("Saved {files}").format(files=", ".join(str(f) for f in files.values()))

    def onExport(self) -> None:
        p = self._parameterNode
        segmentation = p.outputSegmentation
        made_by = segmentation.GetAttribute("MedSeg.Model") if segmentation else None
        model = next((c.key for c in self._choices.values() if c.card.name == made_by), None)
        try:
            files = self.logic.exportResult(segmentation, p.exportFolder, dicomSeg=p.exportSeg, dicomSr=p.exportSr,
                                            pdf=p.exportPdf, meshes=p.exportMeshes, model=model)
        except Exception as exc:
            self._showError(_("Export failed; no file was written"), exc)
            return
        added = self.logic.addToDicomDatabase(files) if p.exportToDatabase else []
        self.ui.statusLabel.text = _("Exported {files}").format(files=", ".join(str(f) for f in files.paths)) + (
            _("; {n} file(s) added to the DICOM database").format(n=len(added)) if added else "")
