"""The panel's Export step on the real Slicer core: a corrected result exported as DICOM SEG and SR, PDF and meshes
from the real 20-slice CT series, read back and compared in physical space; bad inputs refused with nothing written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume, application_modules, hippocampus_card, snapshot, synthetic_result

from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import read_card
from medseg.cli_export import checkpoint_sha256
from medseg.geometry import Geometry
from medseg.io import read_image
from MedSegLib.corrections import ai_labels
from MedSegLib.dicom_export import INSTANCE_UIDS_ATTRIBUTE, export_result
from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import SOURCE_VOLUME_ROLE, labelmap_from_segmentation
from MedSegLib.tables import recompute_table, table_rows

hd = pytest.importorskip("highdicom", reason="the DICOM export needs highdicom (pip install 'medseg[dicom]')")
pydicom = pytest.importorskip("pydicom", reason="the DICOM export needs pydicom (pip install 'medseg[dicom]')")
pytest.importorskip("reportlab", reason="the PDF report needs reportlab (pip install 'medseg[report]')")
pytest.importorskip("skimage", reason="the meshes need scikit-image (pip install 'medseg[meshes]')")

SHA256 = "ab" * 32


class DicomDatabase:
    """Slicer's ``ctkDICOMDatabase`` as far as the export uses it: SOP Instance UID -> file ("" when unknown)."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")


@pytest.fixture(scope="module")
def series(shared_data) -> Path:
    folder = shared_data / "examples" / "totalsegmentator" / "dicom_repaired"
    if not folder.is_dir():
        pytest.skip(f"the example CT series is not in {folder}")
    return folder


def _slices_reversed(image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """The same voxels in the same places, stored with the slice order reversed (k runs the other way), as a loader
    other than the engine's may store a series."""
    m = geometry.ijk_to_ras()
    m[:3, 3] += (image.shape[0] - 1) * m[:3, 2]
    m[:3, 2] *= -1
    return np.ascontiguousarray(image[::-1]), Geometry.from_ijk_to_ras(m)


@pytest.fixture(params=["engine order", "slices reversed"])
def result(scene, series, monkeypatch, request):
    """The series as a volume loaded from DICOM, a result on it, and one segment corrected by hand."""
    image, geometry = read_image(series)
    if request.param == "slices reversed":
        image, geometry = _slices_reversed(image, geometry)
    volume = add_volume(scene, image, geometry, "CT 20 slices")
    files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in sorted(series.iterdir())}
    volume.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(files))
    labels = np.zeros(image.shape, dtype=np.uint8)
    z, y, x = image.shape
    labels[2:z - 7, y // 4:y // 2, x // 4:x // 2] = 1  # not symmetric in z: a slice-order mix-up would show
    labels[4:z - 4, y // 2:3 * y // 4, x // 2:3 * x // 4] = 2
    inputs = RunInputs(image[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    applied = apply(scene, inputs, synthetic_result(image, geometry, labels, hippocampus_card()))
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    anterior = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Segment_1", volume)
    anterior[:, :, : x // 3] = 0  # the user erases part of the first segment
    slicer.util.updateSegmentBinaryLabelmapFromArray(anterior, segmentation, "Segment_1", volume)
    recompute_table(segmentation)
    return volume, segmentation, DicomDatabase(files)


def _seg_in_volume_grid(seg_path: Path, volume, files: dict[str, str], shape) -> np.ndarray:
    """The SEG read back by highdicom, each frame pixel placed by its own position into the volume's voxel grid
    (RAS -> IJK of the node), as segment numbers."""
    seg = hd.seg.segread(seg_path)
    ras_to_ijk = vtk_matrix(volume)
    out = np.zeros(shape, dtype=np.uint8)
    hits = np.zeros(shape, dtype=np.int32)
    for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
        frame = seg.get_pixels_by_source_instance([item.ReferencedSOPInstanceUID], combine_segments=True,
                                                  skip_overlap_checks=True, ignore_spatial_locations=True)[0]
        source = pydicom.dcmread(files[item.ReferencedSOPInstanceUID], stop_before_pixels=True)
        rows, cols = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
        iop = np.asarray(source.ImageOrientationPatient, dtype=float)
        dr, dc = (float(v) for v in source.PixelSpacing)  # row spacing, column spacing
        lps = (np.asarray(source.ImagePositionPatient, dtype=float)[None, None]
               + cols[..., None] * dc * iop[:3] + rows[..., None] * dr * iop[3:])
        ras = np.concatenate([-lps[..., :2], lps[..., 2:], np.ones((*lps.shape[:2], 1))], axis=-1)
        ijk = np.rint(ras @ ras_to_ijk.T).astype(int)[..., :3]
        out[ijk[..., 2], ijk[..., 1], ijk[..., 0]] = frame
        hits[ijk[..., 2], ijk[..., 1], ijk[..., 0]] += 1
    assert (hits == 1).all()  # every voxel of the volume is one pixel of one frame
    return out


def vtk_matrix(volume) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_the_corrected_result_is_exported_as_it_is_now(scene, result, tmp_path):
    volume, segmentation, database = result
    before = snapshot(scene)
    files = export_result(scene, segmentation, tmp_path, dicom_database=database, card=hippocampus_card(),
                          checkpoint_sha256=SHA256)
    assert snapshot(scene) == before  # the scene is not changed by an export
    assert files.edited and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [files.dicom_seg.name, files.dicom_sr.name, files.pdf.name, files.meshes[0].parent.name])

    seg = pydicom.dcmread(files.dicom_seg)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior hippocampus", "posterior hippocampus"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    current = labelmap_from_segmentation(segmentation, volume, ["Segment_1", "Segment_2"], [1, 2])
    assert not np.array_equal(current, ai_labels(segmentation))  # the edit is in what is compared
    assert np.array_equal(_seg_in_volume_grid(files.dicom_seg, volume, database.files, current.shape), current)

    table = {r["name"]: r for r in table_rows(segmentation.GetNodeReference("MedSeg.Table"))}
    sr = hd.sr.srread(files.dicom_sr)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    for group, segment in zip(groups, seg.SegmentSequence, strict=True):
        volumes = [m.value for m in group.get_measurements() if m.name.meaning == "Volume"]
        assert volumes[0] == pytest.approx(table[segment.SegmentLabel]["volume_ml"], rel=1e-9)  # then the interval
        row, edits = table[segment.SegmentLabel], _sr_edit_items(group)
        edited = bool(row["added_ml"] or row["removed_ml"])
        assert edits.pop("E0001") == ("Yes" if edited else "No")
        if edited:  # the first segment: how much, as in the table
            assert edits == pytest.approx({"ai volume": row["ai_volume_ml"], "E0003": row["added_ml"],
                                           "E0004": row["removed_ml"], "E0005": row["edit_dice"],
                                           "E0006": row["edit_hd95_mm"]}, rel=1e-6)
        else:
            assert edits == {}
    assert [_sr_edit_items(g)["E0001"] for g in groups] == ["Yes", "No"]
    assert files.pdf.read_bytes().startswith(b"%PDF") and files.pdf.stat().st_size > 10_000
    if shutil.which("pdftotext"):  # the PDF says how much each edited segment changed, as the table does
        text = " ".join(subprocess.run(["pdftotext", str(files.pdf), "-"], capture_output=True, text=True,
                                       encoding="utf-8", check=True).stdout.split())
        edited_rows = [r for r in table.values() if r["added_ml"] or r["removed_ml"]]
        assert edited_rows
        for row in edited_rows:
            line = f"AI {row['ai_volume_ml']:.2f} mL, edited {row['corrected_volume_ml']:.2f} mL"
            assert line in text, (line, text[:600])
    assert sorted(p.name for p in files.meshes) == sorted(
        p.name for p in files.meshes[0].parent.iterdir()) and len(files.meshes) == 4
    assert all(p.stat().st_size > 84 for p in files.meshes)  # STL header + count, OBJ: not empty


def test_an_unedited_result_is_automatic_and_a_folder_can_replace_the_database(scene, series, tmp_path):
    """Also: the model is the bundled one the result names; its checkpoint's SHA-256 is the algorithm version."""
    checkpoint = resolve_checkpoint("hippocampus-unet3d")
    card = read_card(checkpoint)
    image, geometry = read_image(series)
    volume = add_volume(scene, image, geometry, "CT")  # not loaded from DICOM: no instance UIDs
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[5:10, 100:140, 100:140] = 2
    inputs = RunInputs(image[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    applied = apply(scene, inputs, synthetic_result(image, geometry, labels, card))
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    files = export_result(scene, segmentation, tmp_path, pdf=False, meshes=False, source_folder=series)
    assert not files.edited and files.pdf is None and files.meshes == ()
    seg = pydicom.dcmread(files.dicom_seg)  # the empty segment is left out, as the engine does
    assert [(s.SegmentLabel, s.SegmentAlgorithmType) for s in seg.SegmentSequence] == [
        (card.label(2).name, "AUTOMATIC")]
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert identification.AlgorithmName == card.name
    assert identification.AlgorithmVersion == checkpoint_sha256(checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([files.dicom_seg.name, files.dicom_sr.name])
    groups = hd.sr.srread(files.dicom_sr).content.get_volumetric_roi_measurement_groups()
    assert [_sr_edit_items(g) for g in groups] == [{"E0001": "No"}]  # known unedited: no "how much" items


def _sr_edit_items(group) -> dict:
    """The SR group's edit items (MedSeg's private codes): "edited" Yes/No and, for an edited segment, the AI volume,
    mL added (E0003) and removed (E0004), Dice (E0005) and HD95 (E0006)."""
    out = {e.name.value: e.value.meaning for e in group.get_qualitative_evaluations()
           if e.name.scheme_designator == "99MEDSEG"}
    for m in group.get_measurements():
        if m.name.scheme_designator == "99MEDSEG":
            out[m.name.value] = m.value
        elif m.name.meaning == "Volume" and m.method is not None and m.method.value == "E0002":
            out["ai volume"] = m.value
    return out


@pytest.mark.parametrize("case", ["no DICOM", "empty UIDs", "missing file", "no source", "wrong folder"])
def test_bad_inputs_are_refused_with_nothing_written(scene, result, tmp_path, case):
    volume, segmentation, database = result
    kwargs = {"dicom_database": database}
    if case == "no DICOM":
        volume.RemoveAttribute(INSTANCE_UIDS_ATTRIBUTE)
    elif case == "empty UIDs":
        volume.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, "  ")
    elif case == "missing file":
        kwargs["dicom_database"] = DicomDatabase(dict(list(database.files.items())[1:]))
    elif case == "no source":
        segmentation.RemoveNodeReferenceIDs(SOURCE_VOLUME_ROLE)
        segmentation.RemoveNodeReferenceIDs(segmentation.GetReferenceImageGeometryReferenceRole())
    else:
        kwargs["source_folder"] = tmp_path  # a folder with no DICOM series
    before = snapshot(scene)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError) as error:
        export_result(scene, segmentation, out, card=hippocampus_card(), checkpoint_sha256=SHA256, **kwargs)
    message = str(error.value)
    assert (volume.GetName() in message or segmentation.GetName() in message or str(tmp_path) in message)
    assert list(out.iterdir()) == [] and snapshot(scene) == before
