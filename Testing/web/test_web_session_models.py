"""`WebSession` (no browser) for the page's model options and correction clicks: a UNet++ run gets the prune level
and accurate mode, a multi-channel model gets one opened volume per channel, and a probability-guided click adds or
removes a region as one undo step (or says why nothing changed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")

from web_support import SAMPLE, finish, open_session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    session = open_session(tmp_path_factory.mktemp("root"))
    yield session
    session.close()


def test_unetpp_options_reach_the_run(session):
    """The page's prune level and accurate mode go to the run as the panel passes them (UNet++ only)."""
    session.open_path(SAMPLE.name)
    assert session.is_unetpp("hippocampus-unetpp") and not session.is_unetpp("hippocampus-unet3d")
    session.start({"modelName": "hippocampus-unetpp", "device": "cpu", "pruneLevel": 2, "accurate": True,
                   "uncertainty": False, "probabilities": False})
    finish(session)
    network = session.cache.get("hippocampus-unetpp", "cpu").model
    assert (network.prune_level, network.accurate) == (2, True)
    session.start({"modelName": "hippocampus-unetpp", "device": "cpu", "pruneLevel": "3", "accurate": False,
                   "uncertainty": False, "probabilities": False})
    finish(session)
    assert (network.prune_level, network.accurate) == (3, False)
    settings = session.settings({"modelName": "hippocampus-unet3d", "pruneLevel": 2, "accurate": True})
    assert settings.prune_level is None and not settings.accurate  # not a UNet++: the options are not passed


@pytest.fixture(scope="module")
def two_channel_model(session) -> Path:
    """A tiny random-weight U-Net with two MR inputs (T1w, T2w), the bridge tests' card (Testing/card_support) and
    head calibration (``MedSegLib.selftest.calibrate_head``: not all background on the sample)."""
    import torch
    from card_support import card_dict

    from medseg.card import ModelCard
    from medseg.checkpoint import save_checkpoint
    from medseg.io import read_image
    from medseg.models import build_model
    from MedSegLib.selftest import calibrate_head

    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=2, num_classes=3, width=0.0625, depth=3).eval()
    calibrate_head(model, read_image(SAMPLE)[0])
    card = {**card_dict(model, ("T1w", "T2w")), "name": "tiny-two-channel", "patch_size": [16, 32, 16]}
    return save_checkpoint(session.options.data_root / "two.safetensors", model, ModelCard.from_dict(card))


def test_multichannel_model_takes_one_volume_per_channel(session, two_channel_model):
    import SimpleITK as sitk

    from medseg.inference import Segmenter, SegmentOptions
    from medseg.io import read_image

    root = session.options.data_root
    image = sitk.ReadImage(str(SAMPLE))
    sitk.WriteImage(image, str(root / "t1.nii.gz"))
    sitk.WriteImage(sitk.InvertIntensity(image, 1000.0), str(root / "t2.nii.gz"))
    key = session.add_model_path(two_channel_model.name, device="cpu")
    assert session.channel_labels(key) == ["T1w (MR):", "T2w (MR):", ""]
    t1 = session.open_path("t1.nii.gz")
    t2 = session.open_path("t2.nii.gz")
    assert [i["title"] for i in session.volume_items()][-2:] == ["t1.nii.gz", "t2.nii.gz"]
    run = {"modelName": key, "device": "cpu", "uncertainty": False, "probabilities": False}
    with pytest.raises(ValueError, match="T2w"):  # the second channel not picked: refused by its card name
        session.start({**run, "inputVolume": t1.GetID()})
    session.start({**run, "inputVolume": t1.GetID(), "channel2Volume": t2.GetID()})
    finish(session)
    assert session.volume is t1 and session.segmentation is not None  # the result is on the first channel
    channels = [read_image(root / name)[0] for name in ("t1.nii.gz", "t2.nii.gz")]
    expected = Segmenter(two_channel_model, device="cpu").segment(
        np.stack(channels), read_image(root / "t1.nii.gz")[1], SegmentOptions(uncertainty=False, review=False))
    assert {r["name"]: r["voxel_count"] for r in session.table()} == {
        m.name: m.voxel_count for m in expected.measurements}
    assert all(m.voxel_count > 0 for m in expected.measurements)
    swapped = Segmenter(two_channel_model, device="cpu").segment(
        np.stack(channels[::-1]), read_image(root / "t1.nii.gz")[1], SegmentOptions(uncertainty=False, review=False))
    assert [m.voxel_count for m in swapped.measurements] != [m.voxel_count for m in expected.measurements]
    session.open_path("t1.nii.gz")  # opened again: replaces the node of that name, the other stays
    assert [i["title"] for i in session.volume_items()].count("t1.nii.gz") == 1 and t2.GetID() in session.opened


def _ras(volume, kji) -> tuple[float, float, float]:
    from MedSegLib.volumes import world_ijk_to_ras

    return tuple(float(v) for v in (world_ijk_to_ras(volume) @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3])


def test_guided_click_adds_removes_and_undoes(session):
    """A click adds the probable region under it, or removes the segment's piece there; each one undo step; a click
    on nothing probable is refused with a readable message and changes nothing."""
    import slicer

    from MedSegLib.guided_edit import probability_overlay

    session.open_path(SAMPLE.name)
    session.start({"modelName": "hippocampus-unet3d", "device": "cpu"})
    finish(session)
    segment = session.segment_items()[0]["value"]
    before = session.table()[0]["voxel_count"]
    probability = slicer.util.arrayFromVolume(probability_overlay(session.segmentation, segment))
    inside = _ras(session.volume, np.argwhere(probability >= 0.5)[0])
    added = session.guided_click(segment, inside, add=True, threshold=0.2)
    grown = session.remeasure()[0]
    assert before < grown["voxel_count"] <= before + added and grown["edited"] == "yes"  # the region holds the click
    session.undo()
    assert session.remeasure()[0]["voxel_count"] == before
    commands = session.undo_stack.n_commands()
    low = np.argwhere(probability < 0.01)
    far = low[np.argmax(np.abs(low - np.argwhere(probability >= 0.5).mean(0)).sum(1))]  # farthest from the organ
    with pytest.raises(ValueError, match="no probable region under the click"):
        session.guided_click(segment, _ras(session.volume, far), add=True, threshold=0.95)
    assert session.undo_stack.n_commands() == commands and session.remeasure()[0]["voxel_count"] == before
    with pytest.raises(ValueError, match="outside the volume"):
        session.guided_click(segment, (1e4, 1e4, 1e4), add=True, threshold=0.5)
    removed = session.guided_click(segment, inside, add=False, threshold=0.5)
    assert 0 < removed <= before and session.remeasure()[0]["voxel_count"] == before - removed
    session.undo()
    assert session.remeasure()[0]["voxel_count"] == before
    clicks = []
    session.click_handler = lambda ras, add: clicks.append((ras, add))
    session.set_effect("guided_remove")  # a click in a slice view reaches the handler with its RAS point
    session.app.segmentation_editor.active_effect.click(inside)
    assert clicks == [(inside, False)]
    session.set_effect("none")
