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
