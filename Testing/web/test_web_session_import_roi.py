"""`WebSession` (no browser) for the page's "Add" of an nnU-Net v2 results folder (converted by the panel's own
``MedSegLib.nnunet_import``) and its "Limit to box" (a markups ROI read by ``run.read_inputs``, as the panel's ROI
selector): the imported model runs and equals the engine on the converted checkpoint, a folder that is not one is
named with what it lacks, and a boxed run is empty outside the box and the engine's ROI run inside it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from nnunet_folder import write_results_folder
from web_support import SAMPLE, finish, open_session

FAST = {"device": "cpu", "uncertainty": False, "probabilities": False}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    session = open_session(tmp_path_factory.mktemp("root"))
    yield session
    session.close()


def test_nnunet_results_folder_becomes_a_model_that_runs(session):
    from medseg.inference import SegmentOptions
    from medseg.io import read_image
    from medseg.postprocess import PostprocessOptions

    root = session.options.data_root
    folder, _networks = write_results_folder(root / "nnunet")  # as nnU-Net 2.8 writes it (Testing/engine)
    relative = str(folder.relative_to(root))
    key = session.add_model_path(relative, device="cpu")
    choice = session.choices[key]
    assert Path(key).suffix == ".safetensors" and not Path(key).is_relative_to(root)  # converted, not in the root
    assert choice.card.training["nnunet"]["folds"] == ["fold_0"] and choice.card.architecture == "plain_conv_unet"
    assert [label.name for label in choice.card.foreground_labels] == ["anterior", "posterior"]
    assert "Dataset777_Tiny" in choice.text or choice.card.name in choice.text
    session.open_path(SAMPLE.name)
    session.start({"modelName": key, **FAST})
    finish(session)
    image, geometry = read_image(SAMPLE)
    expected = session.cache.get(key, "cpu").segment(image, geometry, SegmentOptions(
        uncertainty=False, review=False, postprocess=PostprocessOptions()))
    assert {r["name"]: r["voxel_count"] for r in session.table()} == {
        m.name: m.voxel_count for m in expected.measurements}
    assert session.add_model_path(f"{relative}/plans.json", device="cpu") == key  # the same folds: the same model


def test_a_folder_that_is_not_an_nnunet_model_is_named_with_the_fix(session):
    root = session.options.data_root
    before = dict(session.choices)
    (root / "notes").mkdir()
    (root / "notes" / "plans.json").write_text("{}")
    with pytest.raises(ValueError, match=r"'notes' is a folder but not an nnU-Net v2 results folder \(it lacks "
                                         r"dataset.json, fold_N folders\).*Give the folder nnU-Net trained into"):
        session.add_model_path("notes")
    folder, _ = write_results_folder(root / "broken")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be used as a model; the model list is unchanged") as error:
        session.add_model_path(str(folder.relative_to(root)))
    assert "refused to load" in str(error.value) and str(root.resolve()) not in str(error.value)
    with pytest.raises(ValueError, match="refused"):
        session.add_model_path("../nnunet")
    assert session.choices == before


def test_limit_to_box_is_the_engines_roi_run(session):
    from medseg.inference import SegmentOptions
    from medseg.io import read_image
    from medseg.postprocess import PostprocessOptions
    from MedSegLib.corrections import ai_labels
    from MedSegLib.volumes import roi_to_ijk_box

    volume = session.open_path(SAMPLE.name)
    assert session.volume_box() == [0, 34, 0, 50, 0, 34]  # 35 x 51 x 35 voxels (i, j, k)
    image, geometry = read_image(SAMPLE)
    segmenter = session.cache.get("hippocampus-unet3d", "cpu")
    options = SegmentOptions(uncertainty=False, review=False, postprocess=PostprocessOptions())
    whole = segmenter.segment(image, geometry, options).labels
    organ = np.argwhere(whole > 0)
    k_cut = int(np.median(organ[:, 0]))  # a box through the middle of the hippocampus along k
    box = [2, 30, 3, 48, 0, k_cut]  # first and last voxel on i, j, k as typed in the page
    half_open = (2, 31, 3, 49, 0, k_cut + 1)
    with pytest.raises(ValueError, match="axis k from 0 to 35"):
        session.start({"modelName": "hippocampus-unet3d", **FAST, "roiBox": [2, 30, 3, 48, 0, 35]})
    with pytest.raises(ValueError, match="i last voxel: 'x' is not a number"):
        session.start({"modelName": "hippocampus-unet3d", **FAST, "roiBox": [2, "x", 3, 48, 0, 9]})
    assert session.task is None
    session.start({"modelName": "hippocampus-unet3d", **FAST, "roiBox": box})
    finish(session)
    assert roi_to_ijk_box(session.roi, volume) == half_open and session.roi.GetDisplayNode().GetVisibility()
    assert session.box_text() == f"Box: voxels i 2-30, j 3-48, k 0-{k_cut} (29 x 46 x {k_cut + 1} mm)"  # 1 mm voxels
    labels = ai_labels(session.segmentation, volume)
    inside = np.zeros(labels.shape, bool)
    inside[0:k_cut + 1, 3:49, 2:31] = True  # (k, j, i)
    expected = segmenter.segment(image, geometry, SegmentOptions(
        uncertainty=False, review=False, postprocess=PostprocessOptions(), roi=half_open)).labels
    assert not labels[~inside].any() and (labels[inside] > 0).any()
    assert np.array_equal(labels, expected)
    assert whole[~inside].any()  # the box did cut the organ: without it there is more
    assert sum(r["voxel_count"] for r in session.table()) == int((labels > 0).sum())
    session.start({"modelName": "hippocampus-unet3d", **FAST, "roiBox": None})  # box off: the whole volume, ROI hidden
    finish(session)
    assert np.array_equal(ai_labels(session.segmentation, volume), whole)
    assert not session.roi.GetDisplayNode().GetVisibility() and session.box_text() == ""
