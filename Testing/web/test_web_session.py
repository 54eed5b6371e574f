"""`MedSegWeb.session.WebSession` on a real trame-slicer `SlicerApp` (no browser): the run's life cycle and refusals."""

from __future__ import annotations

import io
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")

from MedSegWeb.security import ServeOptions
from MedSegWeb.session import WebSession

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"
MODEL = {"modelName": "hippocampus-unet3d", "device": "cpu"}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from trame_slicer.core import SlicerApp

    from MedSegLib.headless import register_converter_rules

    register_converter_rules()
    root = tmp_path_factory.mktemp("root")
    shutil.copy(SAMPLE, root / SAMPLE.name)
    (root / "notes.nii.gz").write_text("not an image")
    session = WebSession(SlicerApp(), ServeOptions(data_root=root, max_upload_mb=1))
    yield session
    session.close()


def _node_ids(session) -> list[str]:
    scene = session.scene
    return sorted(scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes()))


def _finish(session):
    assert session.task.wait(120)
    return session.poll()


def test_bad_files_are_refused_by_name(session):
    with pytest.raises(ValueError, match="notes.nii.gz"):
        session.open_path("notes.nii.gz")
    with pytest.raises(ValueError, match="limited to 1 MB"):
        session.open_upload("big.nii.gz", b"\0" * (2 * 2**20))
    with pytest.raises(ValueError, match="refused"):
        session.open_path("../" + SAMPLE.name)
    with pytest.raises(ValueError, match="no volume open"):
        session.start(MODEL)


def test_second_click_refused_and_cancel_changes_nothing(session):
    session.open_path(SAMPLE.name)
    before = _node_ids(session)
    session.start({**MODEL, "tta": True})
    with pytest.raises(ValueError, match="already running"):
        session.start(MODEL)
    with pytest.raises(ValueError, match="running"):
        session.open_path(SAMPLE.name)
    session.cancel()
    status = _finish(session)
    assert status.finished and not status.applied and "nothing was changed" in status.message
    assert _node_ids(session) == before and session.segmentation is None


def test_run_edit_and_save(session):
    session.start(MODEL)
    status = _finish(session)
    assert status.applied, status.error
    rows = session.table()
    assert [r["name"] for r in rows] == ["anterior hippocampus", "posterior hippocampus"]
    assert all(r["voxel_count"] > 0 for r in rows)
    assert set(session.overlays()) >= {"uncertainty", "probability:anterior hippocampus"}
    segment = session.segment_items()[0]["value"]
    session.guided_threshold(segment, 0.2)
    grown = session.remeasure()
    assert grown[0]["voxel_count"] > rows[0]["voxel_count"] and grown[0]["edited"] == "yes"
    session.undo()
    assert session.remeasure()[0]["voxel_count"] == rows[0]["voxel_count"]
    name, content = session.results_zip()
    assert name.endswith(".zip")
    names = zipfile.ZipFile(io.BytesIO(content)).namelist()
    assert {Path(n).suffix for n in names} >= {".nrrd", ".gz", ".csv"}, names
    with pytest.raises(ValueError, match="DICOM series as input"):
        session.export_zip()


def test_missing_web_extra_is_named(monkeypatch, capsys):
    from medseg.cli import main

    monkeypatch.setitem(sys.modules, "MedSegWeb.app", None)  # as if trame were not installed
    assert main(["serve"]) == 2
    assert "medseg[web]" in capsys.readouterr().err


def _voxels(session, segment_id: str) -> int:
    return int(session.app.segmentation_editor.get_segment_labelmap(segment_id, as_numpy_array=True).astype(bool).sum())


def test_islands_and_smoothing_are_undone(session):
    """trame-slicer's Islands and Smoothing effects on a result, each one step of the page's undo stack."""
    editor = session.app.segmentation_editor
    segment = session.segment_items()[0]["value"]
    before = _voxels(session, segment)
    mask = editor.get_segment_labelmap(segment, as_numpy_array=True).astype(bool)
    blob = mask.copy()
    blob[:4, :4, :4] = True  # a distant island in a corner of the grid (the hippocampus is in its middle)
    assert not mask[:4, :4, :4].any()
    editor.active_segment_modifier.set_segment_labelmap(segment, blob.astype(mask.dtype))
    assert _voxels(session, segment) == before + 64
    session.islands(segment, "keep_largest")
    assert _voxels(session, segment) == before
    assert session.remeasure()[0]["voxel_count"] == before
    session.undo()
    assert _voxels(session, segment) == before + 64
    session.islands(segment, "remove_small", min_voxels=100)
    assert _voxels(session, segment) == before
    session.smooth(segment, "opening", 3.0)
    smoothed = _voxels(session, segment)
    assert smoothed != before
    assert session.remeasure()[0]["voxel_count"] == smoothed
    session.undo()
    assert _voxels(session, segment) == before
    session.undo()
    session.undo()
    assert session.remeasure()[0]["voxel_count"] == before
    with pytest.raises(ValueError, match="unknown smoothing method"):
        session.smooth(segment, "blur", 3.0)
    with pytest.raises(ValueError, match="no segment"):
        session.islands("nope", "keep_largest")
    with pytest.raises(ValueError, match="not a number"):
        session.islands(segment, "remove_small", min_voxels="many")
    with pytest.raises(ValueError, match="unknown scissors mode"):
        session.set_effect("scissors", None, "cut")
    session.set_effect("scissors", None, "fill_outside")  # trame-slicer's Scissors, drawn in the page's view
    assert type(session.app.segmentation_editor.active_effect).__name__ == "SegmentationEffectScissors"
    session.set_effect("none")


def test_user_checkpoint_and_grad_cam_class(session):
    """A checkpoint from the data root joins the picker and runs with a Grad-CAM class; bad files are refused by
    name with the fix, the picker unchanged."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from medseg.catalog import resolve_checkpoint

    root = session.options.data_root
    unet = resolve_checkpoint("hippocampus-unet3d")
    shutil.copy(unet, root / "mine.safetensors")
    with safe_open(str(unet), framework="pt") as f:
        card = f.metadata()
    save_file(load_file(str(resolve_checkpoint("hippocampus-unetpp"))), str(root / "mismatch.safetensors"), card)
    keys = set(session.choices)
    with pytest.raises(ValueError, match=r"notes\.pt cannot be used as a model; the model list is unchanged"):
        session.add_model_upload("notes.pt", b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"mismatch\.safetensors cannot be used") as refused:
        session.add_model_path("mismatch.safetensors")
    assert str(root) not in str(refused.value)
    assert set(session.choices) == keys and not list(session._uploads.glob("model-*"))
    key = session.add_model_path("mine.safetensors", device="cpu")
    assert set(session.choices) == keys | {key} and "mine.safetensors" in session.choices[key].text
    assert "hippocampus" in session.card_text(key)
    items = session.activation_items(key)
    assert [i["value"] for i in items] == ["", "anterior hippocampus", "posterior hippocampus"]
    loads = session.cache.loads
    session.start({"modelName": key, "device": "cpu", "activationClass": "posterior hippocampus"})
    status = _finish(session)
    assert status.applied, status.error
    assert session.cache.loads == loads  # the run reused the model loaded when it was added
    assert "activation:posterior hippocampus" in session.overlays()
