"""Translatable bridge text (MedSegLib.i18n): unchanged without the Slicer application (slicer-core here), and, with
a translator standing in for Slicer's ``app.translate``, looked up in the calling file's context (as Slicer's
``tr`` does) with its placeholders kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import slicer

from MedSegLib import i18n, volumes
from MedSegLib.export import save_results
from MedSegLib.i18n import context_of, tr
from MedSegLib.panel import device_summary

BRIDGE = Path(volumes.__file__).parent


def test_without_the_application_the_messages_are_the_english_text(scene):
    assert not hasattr(slicer, "app")  # slicer-core: the bridge imports and runs without the application
    assert i18n._slicer_translate() is None
    assert tr("segmenting on {device}") == "segmenting on {device}"
    with pytest.raises(ValueError) as info:
        volumes.check_scalar_volume(None)
    assert str(info.value) == ("no input volume selected; pick a volume in the panel (load one with Add Data or a "
                               "DICOM series first)")
    with pytest.raises(ValueError) as info:
        save_results("/nonexistent", slicer.vtkMRMLSegmentationNode(), formats=["png"])
    assert str(info.value) == "unknown export format(s) ['png']; use seg.nrrd, nii.gz, csv, ai.nii.gz"
    assert device_summary(["cpu"]) == "No GPU found: runs on the CPU"


def test_the_context_is_the_calling_file_as_in_slicer():
    assert context_of(str(BRIDGE / "volumes.py")) == "MedSegLib.volumes"  # a package: Package.module
    assert context_of(str(BRIDGE.parent / "MedSeg.py")) == "MedSeg"  # the module file: no __init__.py beside it


def test_a_translation_is_used_in_the_callers_context_unless_it_loses_a_placeholder(scene, monkeypatch):
    looked_up = []
    french = {
        "no region of interest given": "aucune région d'intérêt",
        "input volume": "volume d'entrée",
        "{what} {name!r} has no voxels; load the image again": "{what} {name!r} n'a pas de voxels",
        "segmenting on {device}": "segmentation sur {appareil}",  # a renamed placeholder: refused
        "Found: {gpus} and the CPU": "Trouvé : {gpus} et le CPU",
    }

    def translate(context, text):
        looked_up.append((context, text))
        return french.get(text, text)

    monkeypatch.setattr(i18n, "_slicer_translate", lambda: translate)
    with pytest.raises(ValueError, match="^aucune région d'intérêt$"):
        volumes.roi_to_ijk_box(None, None)
    assert ("MedSegLib.volumes", "no region of interest given") in looked_up
    assert tr("segmenting on {device}") == "segmenting on {device}"
    assert device_summary(["cpu", "cuda:0"]) == "Trouvé : cuda:0 et le CPU"
    assert ("MedSegLib.panel", "Found: {gpus} and the CPU") in looked_up

    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError) as info:
        volumes.arrays_from_volumes([empty])
    assert str(info.value) == "volume d'entrée 'empty' n'a pas de voxels"
