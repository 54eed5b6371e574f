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


def test_the_converted_modules_look_up_whole_sentences_in_their_own_context(scene, monkeypatch):
    from types import SimpleNamespace

    from MedSegLib import dicom_export, finetune_job

    looked_up = []
    german = {"nothing to export from {name!r}: tick DICOM SEG, DICOM SR, PDF or meshes":
              "nichts zu exportieren aus {name!r}: DICOM SEG, DICOM SR, PDF oder Netze ankreuzen"}

    def translate(context, text):
        looked_up.append((context, text))
        return german.get(text, text)

    monkeypatch.setattr(i18n, "_slicer_translate", lambda: translate)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "liver")
    with pytest.raises(ValueError, match="^nichts zu exportieren aus 'liver': DICOM SEG, DICOM SR, PDF oder Netze"):
        dicom_export._check_request(node, "/nonexistent", False, False, False, False)
    step = SimpleNamespace(step=3, steps=50, loss=0.25, eta_s=12.0)
    assert finetune_job._step_message(step) == "fine-tuning: step 3/50, loss 0.250, about 12 s left"
    assert ("MedSegLib.finetune_job", "fine-tuning: step {step}/{steps}, loss {loss:.3f}, about {seconds:.0f} s "
            "left") in looked_up  # one whole sentence, not the fragments it used to be joined from
