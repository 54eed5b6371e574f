"""Paths and a parameter-node stand-in shared by the module tests (imported by name: conftest modules are not
importable)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "MedSegExtension" / "MedSeg.py"
WIDGETS_DIR = REPO / "MedSegExtension" / "MedSegWidgets"  # the module's helpers (logic facade, panel parts)
UI_FILE = REPO / "Resources" / "UI" / "MedSeg.ui"
SAMPLE = REPO / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"


def parameters(**changes) -> SimpleNamespace:
    """The parameter node's fields with their defaults in MedSeg.py."""
    from MedSegLib.panel import Device

    values = dict(inputVolume="T1", channel2Volume="T2", channel3Volume=None, modelName="hippocampus-unet3d",
                  device=Device.AUTO, tta=False, overlap=0.5, pruneLevel=4, accurate=False, largestComponent=False,
                  fillHoles=False, minIslandMl=0.0, roi=None, uncertainty=True, probabilities=False,
                  activationClass="", replacePrevious=True, overlayOpacity=0.5)
    values.update(changes)
    return SimpleNamespace(**values)


def module_sources() -> str:
    """MedSeg.py and every file of its helper package MedSegWidgets/, as one text."""
    files = [MODULE_FILE, *sorted(WIDGETS_DIR.glob("*.py"))]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)
