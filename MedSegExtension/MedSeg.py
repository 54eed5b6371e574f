"""MedSeg: U-Net family segmentation in 3D Slicer.

This file follows Slicer's scripted-module template (Module, Widget, Logic, Test). The engine (``medseg``)
and the bridge (``MedSegLib``) hold the work; this file only wires them to the application. The
Segment panel (model picker, overlays, volume table) arrives with the Slicer-module issue; for now the
panel lists the architectures and bundled models the engine finds.
"""

import logging

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class MedSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSeg developers"]
        self.parent.helpText = (
            "Segment CT and MRI volumes with U-Net, UNet++, V-Net and Attention U-Net models; show probability, "
            "uncertainty and Grad-CAM overlays and a table of organ volumes."
        )
        self.parent.acknowledgementText = (
            "Networks after Ronneberger 2015, Zhou 2018, Milletari 2016 and Oktay 2018. Bundled models are trained "
            "on public data sets; see each model card."
        )


class MedSegLogic(ScriptedLoadableModuleLogic):
    """Facade over the engine. The engine needs PyTorch, imported only when used (never at module load)."""

    def catalog(self):
        """(architecture names, bundled model entries); raises ImportError when PyTorch is missing."""
        from medseg.catalog import bundled_models
        from medseg.models import architecture_names

        return architecture_names(), bundled_models()


class MedSegWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        self.logic = MedSegLogic()
        self.modelsText = qt.QTextBrowser()
        self.layout.addWidget(self.modelsText)
        self.layout.addStretch(1)
        self.refreshModels()

    def refreshModels(self):
        try:
            architectures, models = self.logic.catalog()
        except ImportError as exc:
            logging.warning("MedSeg engine unavailable: %s", exc)
            self.modelsText.setPlainText(f"PyTorch is not installed ({exc}). Install the PyTorch extension.")
            return
        lines = ["Architectures: " + ", ".join(architectures), "", "Bundled models:"]
        lines += [f"  {m.name}: {m.card.summary}" for m in models] or ["  (none bundled yet)"]
        self.modelsText.setPlainText("\n".join(lines))


class MedSegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_catalog()

    def test_catalog(self):
        architectures, _ = MedSegLogic().catalog()
        self.assertIn("unet", architectures)
