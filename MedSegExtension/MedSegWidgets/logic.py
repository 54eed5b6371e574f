"""The module's logic: a thin facade over the bridge (``MedSegLib``) for the panel and for scripts.

``MedSeg.MedSegLogic`` is this class plus Slicer's ``ScriptedLoadableModuleLogic`` (the parameter node). It imports
slicer but never qt, and the engine only inside the methods that use it, so the module loads without PyTorch; it is
tested on slicer-core (``Testing/module/test_logic*.py``).
"""

import logging

import slicer
from slicer.i18n import tr as _

SEGMENT_EDITOR_TAG = "MedSeg"  # singleton tag of the panel's segment editor node
MODEL_ATTRIBUTE = "MedSeg.Model"  # MedSegLib.segmentation.MODEL_ATTRIBUTE: the card name of the model of a result


class LogicFacade:
    """The bridge calls the panel makes, one method each (mixed into ``MedSegLogic``)."""

    def __init__(self, cache=None) -> None:
        self._cache = cache

    @property
    def cache(self):
        from MedSegLib.run import MODEL_CACHE

        return self._cache if self._cache is not None else MODEL_CACHE

    def modelChoices(self, userPaths=(), modelsFolder=None):
        """The picker's entries: bundled models, the user's checkpoints, then the fine-tuned ones in `modelsFolder`."""
        from medseg.catalog import bundled_models
        from medseg.checkpoint import read_card
        from MedSegLib.finetune_job import model_files
        from MedSegLib.panel import model_choices

        found = model_files(modelsFolder) if modelsFolder else []
        return model_choices(bundled_models(), list(dict.fromkeys([*userPaths, *found])), read_card)

    def readCard(self, path):
        from medseg.checkpoint import read_card

        return read_card(path)

    def availableDevices(self):
        from medseg.device import available_devices

        return available_devices()

    def readInputs(self, volumeNodes, card, roiNode=None):
        from MedSegLib.run import read_inputs

        return read_inputs(volumeNodes, card, roiNode)

    def startSegmentation(self, inputs, settings):
        """Load (or reuse) the model and segment in a background thread; returns the running task."""
        from MedSegLib.worker import start_segmentation

        return start_segmentation(self.cache, settings.model, settings.device, inputs, settings.segment_options())

    def apply(self, inputs, result, settings):
        from MedSegLib.run import apply

        return apply(slicer.mrmlScene, inputs, result, settings.apply_options())

    def segment(self, volumeNodes, settings, roiNode=None):
        """Segment and put the result in the scene in one call (blocks; for scripts)."""
        from MedSegLib.run import SegmentationRun

        return SegmentationRun(slicer.mrmlScene, self.cache).run(
            volumeNodes, settings.model, settings.segment_options(), device=settings.device, roi_node=roiNode,
            apply_options=settings.apply_options())

    def sourceVolume(self, segmentation):
        from MedSegLib.segmentation import SOURCE_VOLUME_ROLE

        return segmentation.GetNodeReference(SOURCE_VOLUME_ROLE)

    def resultTable(self, segmentation):
        from MedSegLib.segmentation import TABLE_ROLE

        return segmentation.GetNodeReference(TABLE_ROLE)

    def overlays(self, segmentation):
        from MedSegLib.segmentation import overlay_nodes

        return overlay_nodes(segmentation) if segmentation is not None else {}

    def showOverlay(self, overlayNode, opacity=0.5, volumeNode=None):
        from MedSegLib.display import show_overlay

        show_overlay(slicer.mrmlScene, overlayNode, opacity, background_node=volumeNode)

    def setOverlayOpacity(self, opacity):
        from MedSegLib.display import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, opacity)

    def jumpTo(self, rasPoint):
        """Centre the slice views on a point (a review region's ``centroid_ras``)."""
        from MedSegLib.review import jump_to

        return jump_to(slicer.mrmlScene, rasPoint)

    def nextRegion(self, regionIds, current):
        from MedSegLib.review import next_region

        return next_region(regionIds, current)

    def crosshairRAS(self):
        """The crosshair's RAS position (Shift+mouse move in a slice view sets it)."""
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is None:
            raise ValueError(_("the scene has no crosshair; open a slice view"))
        return crosshair.GetCrosshairRAS()

    def guidedThreshold(self, segmentation, segmentId, threshold, saveState=None):
        """Set the segment to its probability map above `threshold`, grown from the segment itself."""
        from MedSegLib.guided_edit import apply_threshold

        return apply_threshold(slicer.mrmlScene, segmentation, segmentId, threshold, save_state=saveState)

    def guidedClick(self, segmentation, segmentId, rasPoint, add, threshold, saveState=None):
        """Add the probability region at `rasPoint` to the segment, or remove the segment's piece there."""
        from MedSegLib.guided_edit import add_region_at, remove_region_at

        edit = add_region_at if add else remove_region_at
        return edit(slicer.mrmlScene, segmentation, segmentId, rasPoint, threshold, save_state=saveState)

    def editEvents(self):
        """Segmentation node events after which the volume table is measured again."""
        seg = slicer.vtkSegmentation
        source = getattr(seg, "SourceRepresentationModified", None) or seg.MasterRepresentationModified
        return (seg.SegmentAdded, seg.SegmentRemoved, seg.SegmentModified, source)

    def recomputeTable(self, segmentation, table=None):
        from MedSegLib.tables import recompute_table

        return recompute_table(segmentation, table)

    def save(self, folder, segmentation, table=None, overwrite=True):
        from MedSegLib.export import save_results

        if segmentation is None:
            raise ValueError(_("no segmentation to save; click Segment first or pick one under Results"))
        return save_results(folder, segmentation, table_node=table, overwrite=overwrite)

    def exportResult(self, segmentation, folder, dicomSeg=True, dicomSr=True, pdf=True, meshes=True,
                     sourceFolder=None, model=None):
        """DICOM SEG/SR, PDF and meshes of the result as it is now (``MedSegLib.dicom_export.export_result``)."""
        from MedSegLib.dicom_export import export_result

        if segmentation is None:
            raise ValueError(_("no segmentation to export; click Segment first or pick one under Results"))
        return export_result(slicer.mrmlScene, segmentation, folder, dicom_seg=dicomSeg, dicom_sr=dicomSr, pdf=pdf,
                             meshes=meshes, source_folder=sourceFolder, model=model)

    def addToDicomDatabase(self, files):
        """Index the exported DICOM files in Slicer's DICOM database (the application only; unverified outside it).

        Returns the files added; a failure is logged and leaves the files where they are.
        """
        paths = [str(path) for path in (files.dicom_seg, files.dicom_sr) if path is not None]
        database = getattr(slicer, "dicomDatabase", None)
        if not paths or database is None:
            logging.warning("MedSeg: no DICOM database; the exported files were not added to it")
            return []
        try:
            import ctk

            indexer = ctk.ctkDICOMIndexer()
            for path in paths:
                indexer.addFile(database, path, False)
        except Exception as exc:  # the indexer's API differs between CTK versions
            logging.warning("MedSeg: could not add %s to the DICOM database: %s", ", ".join(paths), exc)
            return []
        return paths

    def segmentEditorNode(self):
        """The panel's own segment editor node (a singleton, so it survives module reloads)."""
        node = slicer.mrmlScene.GetSingletonNode(SEGMENT_EDITOR_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(SEGMENT_EDITOR_TAG)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def clearCache(self) -> None:
        """Forget the loaded models (module reload; frees GPU memory)."""
        self.cache.clear()

    # -- learning from corrections --------------------------------------------------------------------------------
    def resultModel(self, segmentation):
        """The name of the model that made a result (its card's name), or None for a segmentation MedSeg did not
        make. Reads the attribute only (the panel calls it to enable a button: no engine import)."""
        return segmentation.GetAttribute(MODEL_ATTRIBUTE) if segmentation is not None else None

    def correctionsFolder(self, root, modelName):
        """The corrections folder of one model inside the corrections root (a settings value of the panel)."""
        from MedSegLib.finetune_job import corrections_folder

        return corrections_folder(root, modelName)

    def countCases(self, folder):
        from MedSegLib.finetune_job import count_cases

        return count_cases(folder)

    def saveTrainingCase(self, segmentation, root, model=None):
        """Save the result as it is now (image, corrected mask, AI mask, provenance) into the corrections folder of
        the model that made it, inside `root`; `model` is that model's bundled name or checkpoint path."""
        from MedSegLib.training_cases import save_training_case

        name = self.resultModel(segmentation)
        if not name:
            raise ValueError(_("no MedSeg result to save as a training case; click Segment first"))
        return save_training_case(slicer.mrmlScene, segmentation, self.correctionsFolder(root, name), model=model)

    def startFinetune(self, model, corrections, modelsFolder, device="auto", **settings):
        """Fine-tune `model` on a corrections folder in a background thread (``MedSegLib.finetune_job``); the new
        checkpoint goes into `modelsFolder`. `settings`: steps, lr, holdout... of ``FinetuneRequest``."""
        from MedSegLib.finetune_job import FinetuneRequest, start_finetune

        return start_finetune(FinetuneRequest(model=model, corrections=corrections, models_folder=modelsFolder,
                                              device=device, **settings))

    def finetuneSummary(self, result):
        from MedSegLib.finetune_job import finetune_summary

        return finetune_summary(result)
