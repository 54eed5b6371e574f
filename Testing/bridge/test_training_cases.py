""""Save as a training case" on the real Slicer core: a corrected result of a real hippocampus case written into
a Decathlon corrections folder, read back by the engine, and fine-tuned on with ``medseg finetune``."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import slicer
from bridge_support import add_volume, application_modules, make_checkpoint, synthetic_result

from medseg.checkpoint import read_card
from medseg.cli_export import checkpoint_sha256
from medseg.edits import compare_masks
from medseg.io import read_image
from medseg.train.data import read_dataset
from medseg.train.finetune import FinetuneConfig, finetune
from MedSegLib.corrections import AI_MASK_ROLE
from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import labelmap_from_segmentation
from MedSegLib.training_cases import save_training_case
from MedSegLib.volumes import geometry_from_volume

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def corrected(scene, hippocampus, tmp_path, monkeypatch):
    """A result of hippocampus_001 made by a real (tiny) checkpoint's card, with its top anterior slices erased."""
    array, geometry, labels = hippocampus
    checkpoint = make_checkpoint(tmp_path / "tiny.safetensors")
    card = read_card(checkpoint)
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    result = apply(scene, inputs, synthetic_result(array, geometry, labels, card))
    segmentation = scene.GetNodeByID(result.segmentation_id)
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    anterior = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Segment_1", volume)
    ks = np.flatnonzero(anterior.any(axis=(1, 2)))
    anterior[ks[-3]:] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(anterior, segmentation, "Segment_1", volume)
    return volume, segmentation, checkpoint, card, array, labels


def test_a_case_is_saved_in_the_decathlon_layout_with_its_provenance(scene, corrected, tmp_path):
    volume, segmentation, checkpoint, card, array, labels = corrected
    folder = tmp_path / "corrections"
    sha = checkpoint_sha256(checkpoint)
    paths = save_training_case(scene, segmentation, folder, card=card, checkpoint_sha256=sha, now=NOW)
    image, _ = read_image(paths["image"])
    assert np.array_equal(image, array)
    saved, _ = read_image(paths["label"])
    now = labelmap_from_segmentation(segmentation, volume, ["Segment_1", "Segment_2"], [1, 2])
    assert np.array_equal(saved, now) and not np.array_equal(saved, labels)  # the correction, not the AI's
    prediction, _ = read_image(paths["prediction"])
    assert np.array_equal(prediction, labels)
    provenance = json.loads(paths["provenance"].read_text())
    assert provenance["model"] == card.name and provenance["checkpoint_sha256"] == sha
    assert provenance["date"] == "2026-01-02T03:04:05+00:00" and provenance["edited"] is True
    ai = slicer.util.arrayFromVolume(segmentation.GetNodeReference(AI_MASK_ROLE))
    expected = compare_masks(ai, now, geometry_from_volume(volume), {1: "anterior hippocampus",
                                                                    2: "posterior hippocampus"})
    assert [e["removed_voxels"] for e in provenance["edits"]] == [s.removed_voxels for s in expected]
    assert provenance["edits"][0]["removed_voxels"] > 0 and provenance["edits"][1]["removed_voxels"] == 0

    second = save_training_case(scene, segmentation, folder, card=card, checkpoint_sha256=sha, now=NOW)
    assert second["image"].name == "hippocampus_001_2.nii.gz"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"] == {"0": "background", "1": "anterior hippocampus",
                                                           "2": "posterior hippocampus"}
    info = read_dataset(folder)  # the engine reads it as a training data set
    assert list(info.cases) == ["hippocampus_001", "hippocampus_001_2"]

    out = tmp_path / "ft.safetensors"
    result = finetune(FinetuneConfig(model=str(checkpoint), corrections=folder, out=out, steps=1, holdout=1,
                                     num_threads=1), now=NOW)
    assert read_card(out).training["fine_tune"]["parent"]["sha256"] == sha and len(result.used) == 1


def test_a_folder_of_another_model_or_a_result_without_ai_mask_is_refused(scene, corrected, tmp_path):
    _, segmentation, _, card, _, _ = corrected
    folder = tmp_path / "corrections"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}}))
    with pytest.raises(ValueError, match="pick a corrections folder for this model"):
        save_training_case(scene, segmentation, folder, card=card, checkpoint_sha256="0" * 64)
    assert [p.name for p in folder.iterdir()] == ["dataset.json"]  # nothing written
    segmentation.RemoveNodeReferenceIDs(AI_MASK_ROLE)
    with pytest.raises(ValueError, match="has no AI mask kept with it"):
        save_training_case(scene, segmentation, tmp_path / "other", card=card, checkpoint_sha256="0" * 64)
    assert not (tmp_path / "other").exists()
