"""DICOM SEG and SR (TID 1500) on the real 20-slice CT series: references, segments, codes, physical placement
whatever the file order, read back by highdicom and by dcmqi, checked by dciodvfy, the SR's measurements, and every
bad input refused with exit code 2, one line and nothing written.

A tiny random-weight U-Net with a CT input (its head calibrated on the series so that both labels get voxels)
segments the series once per test session; `medseg export` tests use label maps written here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.cli import main
from medseg.io import read_image, read_segmentation, write_segmentation
from medseg.models import build_model

hd = pytest.importorskip("highdicom", reason="DICOM SEG/SR need highdicom (pip install -e '.[dicom,test]')")
pydicom = pytest.importorskip("pydicom", reason="DICOM SEG/SR need pydicom (pip install -e '.[dicom,test]')")

from medseg.dicom import build_segmentation, read_source  # noqa: E402

CT_SERIES = "examples/totalsegmentator/dicom_repaired"
NO_UIDS = "examples/totalsegmentator/dicom"
POSTERIOR = {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
             "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"},
             "typeModifier": {"scheme": "SCT", "code": "255551008", "meaning": "Posterior"}}


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"needs {name} ({'Debian package dicom3tools' if name == 'dciodvfy' else 'PyPI package dcmqi'}; "
                    f"scripts/setup.sh installs it)")
    return found


@pytest.fixture(scope="module")
def ct(shared_data) -> Path:
    return shared_data / CT_SERIES


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory, ct) -> Path:
    """A tiny CT model whose head gives both labels voxels on the series (MedSegLib.selftest.calibrate_head)."""
    from MedSegLib.selftest import calibrate_head

    image, _ = read_image(ct)
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3).eval()
    calibrate_head(model, image[::2, ::4, ::4])
    card = card_dict(model, channels=("CT",))
    card.update(name="tiny-ct", spacing=[4.0, 4.0, 4.0], patch_size=[16, 64, 64], orientation="LPS")
    card["inputs"][0]["modality"] = "CT"
    card["labels"][2]["terminology"] = POSTERIOR
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny-ct.safetensors", model, ModelCard.from_dict(card))


@pytest.fixture(scope="module")
def run(tmp_path_factory, ct, ct_model) -> Path:
    """One `medseg segment` of the series with every DICOM output."""
    out = tmp_path_factory.mktemp("run")
    code = main(["segment", str(ct), "--model", str(ct_model), "--output", str(out / "labels.seg.nrrd"),
                 "--dicom-seg", str(out / "seg.dcm"), "--dicom-sr", str(out / "sr.dcm"), "--report",
                 str(out / "report.json"), "--device", "cpu", "--precision", "fp32", "--overlap", "0",
                 "--no-progress"])
    assert code == 0
    return out


def _frames_by_instance(seg_path: Path) -> dict[str, np.ndarray]:
    """SEG read back by highdicom: per source SOP Instance UID, its frame as a label map of segment numbers."""
    seg = hd.seg.segread(seg_path)
    out = {}
    for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
        uid = item.ReferencedSOPInstanceUID
        pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True, skip_overlap_checks=True,
                                                   ignore_spatial_locations=True)[0]
        out[uid] = pixels
    return out


def _positions(folder: Path) -> dict[str, float]:
    """SOP Instance UID -> z of ImagePositionPatient, read from the files themselves."""
    out = {}
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = float(ds.ImagePositionPatient[2])
    return out


def _expected_frames(labels: np.ndarray, geometry, folder: Path, card_ids: dict[int, int]) -> dict[str, np.ndarray]:
    """Per SOP Instance UID: the label map's slice at that instance's z, with label ids -> segment numbers."""
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
    for label_id, number in card_ids.items():
        lut[label_id] = number
    out = {}
    for uid, z in _positions(folder).items():
        k = int(np.rint((z - geometry.origin[2]) / geometry.spacing[2]))
        out[uid] = lut[labels[k]]
    return out


# --------------------------------------------------------------------------------------------- medseg segment


def test_seg_references_the_source_series(run, ct):
    seg = pydicom.dcmread(run / "seg.dcm")
    files = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct.iterdir()]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.StudyInstanceUID == files[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == files[0].FrameOfReferenceUID
    assert seg.PatientID == files[0].PatientID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == files[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == {f.SOPInstanceUID for f in files}
    assert seg.SeriesInstanceUID != files[0].SeriesInstanceUID and seg.SegmentationType == "BINARY"


def test_segments_carry_names_codes_colors_and_the_algorithm(run, ct_model):
    seg = pydicom.dcmread(run / "seg.dcm")
    card = ModelCard.from_dict(json.loads(subprocess.run(
        [sys.executable, "-m", "medseg", "info", str(ct_model), "--json"], capture_output=True, text=True,
        check=True).stdout))
    segments = list(seg.SegmentSequence)
    assert [s.SegmentLabel for s in segments] == ["anterior hippocampus", "posterior hippocampus"]
    assert [s.SegmentNumber for s in segments] == [1, 2]
    first, second = segments
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "5366008"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    modifier = second.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert (modifier.CodeValue, modifier.CodeMeaning) == ("255551008", "Posterior")
    for segment, label in zip(segments, card.foreground_labels, strict=True):
        assert list(segment.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(*label.color).value)
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmName == "tiny-ct"
        assert algorithm.AlgorithmVersion == hashlib.sha256(ct_model.read_bytes()).hexdigest()
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_seg_read_back_equals_the_label_map_in_physical_space(run, ct):
    labels, geometry, _ = read_segmentation(run / "labels.seg.nrrd")
    assert labels.any()
    expected = _expected_frames(labels, geometry, ct, {1: 1, 2: 2})
    got = _frames_by_instance(run / "seg.dcm")
    assert got.keys() == expected.keys()
    for uid in expected:
        np.testing.assert_array_equal(got[uid], expected[uid], err_msg=uid)


def test_shuffled_file_order_gives_frames_at_the_same_positions(run, ct, ct_model, tmp_path):
    """Copies renamed in a shuffled order: GDCM, highdicom and the folder listing all see another order."""
    folder = tmp_path / "shuffled"
    folder.mkdir()
    files = sorted(ct.iterdir())
    names = [f"{n:03d}.dcm" for n in range(len(files))]
    random.Random(3).shuffle(names)
    for f, name in zip(files, names, strict=True):
        shutil.copy(f, folder / name)
    assert main(["export", str(run / "labels.seg.nrrd"), "--source", str(folder), "--model", str(ct_model),
                 "--unedited", "--dicom-seg", str(tmp_path / "seg.dcm")]) == 0
    a, b = _frames_by_instance(run / "seg.dcm"), _frames_by_instance(tmp_path / "seg.dcm")
    assert a.keys() == b.keys()
    for uid in a:
        np.testing.assert_array_equal(a[uid], b[uid])


def test_dciodvfy_finds_no_error_in_seg_and_sr(run):
    tool = _tool("dciodvfy")
    for name in ("seg.dcm", "sr.dcm"):
        result = subprocess.run([tool, str(run / name)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], (name, errors)


def test_dcmqi_reads_the_seg_back_voxel_identical(run, ct, tmp_path):
    tool = _tool("segimage2itkimage")
    subprocess.run([tool, "--inputDICOM", str(run / "seg.dcm"), "--outputDirectory", str(tmp_path), "--prefix", "s",
                    "-t", "nrrd"], capture_output=True, check=True, timeout=120)
    labels, geometry, _ = read_segmentation(run / "labels.seg.nrrd")
    meta = json.loads((tmp_path / "s-meta.json").read_text())
    reference = sitk.GetImageFromArray(labels)
    reference.SetSpacing(geometry.spacing)
    reference.SetOrigin(geometry.origin)
    reference.SetDirection([v for row in geometry.direction for v in row])
    for n, attributes in enumerate(meta["segmentAttributes"], start=1):
        (segment,) = attributes
        mask = sitk.ReadImage(str(tmp_path / f"s-{n}.nrrd"))
        on_grid = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(on_grid) > 0, labels == segment["labelID"])


def test_sr_has_each_segments_volume_and_references_it(run):
    seg = pydicom.dcmread(run / "seg.dcm")
    report = json.loads((run / "report.json").read_text())
    volumes = {m["name"]: m for m in report["labels"]}
    sr = hd.sr.srread(run / "sr.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    for group, segment in zip(groups, seg.SegmentSequence, strict=True):
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_segment_numbers == [segment.SegmentNumber]
        assert group.tracking_uid == segment.TrackingUID
        frames = [f for f in seg.PerFrameFunctionalGroupsSequence
                  if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == segment.SegmentNumber]
        assert {i.referenced_sop_instance_uid for i in reference.source_images_for_segmentation} == {
            f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames}
        m = volumes[segment.SegmentLabel]
        by_name = {x.name.meaning: x for x in group.get_measurements()}
        assert by_name["Volume"].value == pytest.approx(m["volume_ml"], rel=1e-9)
        assert by_name["Volume"].unit.value == "mL"
        assert by_name["Diameter"].value == pytest.approx(m["largest_diameter_mm"], rel=1e-9)
        hu = by_name["Attenuation Coefficient"]
        assert hu.unit.value == "[hnsf'U]" and hu.value == pytest.approx(m["intensity_mean"], rel=1e-9)
    observer = [i for i in pydicom.dcmread(run / "sr.dcm").ContentSequence
                if i.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer Model Name"]
    assert observer and observer[0].TextValue == "tiny-ct"


# --------------------------------------------------------------------------------------------- medseg export


def _label_map(ct: Path) -> tuple[np.ndarray, object]:
    image, geometry = read_image(ct)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[2:9, 150:260, 180:300] = 1
    labels[11:17, 300:340, 200:250] = 2
    return labels, geometry


def test_export_of_a_cropped_edited_segmentation(ct, ct_model, tmp_path):
    """A .seg.nrrd cropped to its segments (as Slicer saves it) is put back on the source grid voxel for voxel; an
    export is SEMIAUTOMATIC unless --unedited."""
    labels, geometry = _label_map(ct)
    card = ModelCard.from_dict({**json.loads(_card_json(ct_model))})
    crop = labels[2:17, 150:340, 180:300]
    from medseg.geometry import Geometry

    origin = geometry.index_to_lps([180, 150, 2])[0]
    write_segmentation(tmp_path / "c.seg.nrrd", crop, Geometry(geometry.spacing, tuple(origin), geometry.direction),
                       card.labels)
    assert main(["export", str(tmp_path / "c.seg.nrrd"), "--source", str(ct), "--model", str(ct_model),
                 "--dicom-seg", str(tmp_path / "seg.dcm"), "--dicom-sr", str(tmp_path / "sr.dcm")]) == 0
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    expected = _expected_frames(labels, geometry, ct, {1: 1, 2: 2})
    got = _frames_by_instance(tmp_path / "seg.dcm")
    for uid in expected:
        np.testing.assert_array_equal(got[uid], expected[uid])


def _card_json(checkpoint: Path) -> str:
    from medseg.checkpoint import read_card

    return read_card(checkpoint).to_json()


def test_fractional_seg_holds_the_probabilities(ct, ct_model):
    labels, geometry = _label_map(ct)
    rng = np.random.default_rng(0)
    probabilities = rng.random((3, *labels.shape), dtype=np.float32)
    card = ModelCard.from_json(_card_json(ct_model))
    seg = build_segmentation(labels, geometry, read_source(ct), card, checkpoint_sha256="0" * 64,
                             probabilities=probabilities)
    assert seg.SegmentationType == "FRACTIONAL"
    source = read_source(ct)
    k = source.slices(geometry, labels.shape)[5]
    uid = source.datasets[5].SOPInstanceUID
    got = seg.get_pixels_by_source_instance([uid], segment_numbers=[2], ignore_spatial_locations=True,
                                            rescale_fractional=True)[0, ..., 0]
    np.testing.assert_allclose(got, probabilities[2][k], atol=0.5 / 255 + 1e-6)


def test_an_empty_label_is_left_out_and_an_empty_map_refused(ct, ct_model):
    labels, geometry = _label_map(ct)
    card = ModelCard.from_json(_card_json(ct_model))
    source = read_source(ct)
    labels[labels == 1] = 0
    seg = build_segmentation(labels, geometry, source, card, checkpoint_sha256="0" * 64)
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "posterior hippocampus")]
    with pytest.raises(ValueError, match="the segmentation is empty"):
        build_segmentation(np.zeros_like(labels), geometry, source, card, checkpoint_sha256="0" * 64)



def _edit_items(group) -> dict[str, object]:
    """A measurement group's edit items by code value (private scheme), and its "edited" evaluation."""
    from medseg.dicom.sr import PRIVATE_SCHEME

    out = {m.name.value: m for m in group.get_measurements() if m.name.scheme_designator == PRIVATE_SCHEME}
    out.update({f"ai {m.method.meaning}": m for m in group.get_measurements()
                if m.name.meaning == "Volume" and m.method is not None})
    out.update({e.name.value: e for e in group.get_qualitative_evaluations()
                if e.name.scheme_designator == PRIVATE_SCHEME})  # not the finding category
    return out


def test_sr_says_whether_and_how_much_each_segment_was_edited(ct, ct_model, tmp_path):
    """With the AI's mask known: the edited segment gets its AI volume, mL added/removed, Dice and HD95 as numeric
    items with UCUM units, the unedited one only "edited: No"; read back by highdicom and pydicom, valid for
    dciodvfy. Without edits (unknown) no such item at all."""
    from medseg.dicom import build_measurement_report, dataset_bytes
    from medseg.dicom.sr import EDIT_CODES, PRIVATE_SCHEME
    from medseg.edits import compare_masks
    from medseg.measure import measure_labels

    ai, geometry = _label_map(ct)
    corrected = ai.copy()
    corrected[2:9, 150:260, 180:220] = 0  # the user erases part of label 1 ...
    corrected[9:11, 150:260, 180:300] = 1  # ... and adds two slices to it; label 2 is left alone
    card = ModelCard.from_json(_card_json(ct_model))
    source = read_source(ct)
    image, _ = read_image(ct)
    seg = build_segmentation(corrected, geometry, source, card, checkpoint_sha256="0" * 64, edited=True)
    measurements = measure_labels(corrected, geometry, card.labels, image=image)
    stats = {s.label_id: s for s in compare_masks(ai, corrected, geometry, [(x.id, x.name) for x in card.labels])}
    assert stats[1].edited and not stats[2].edited
    sr = build_measurement_report(seg, measurements, source, card, edited=True, edits=list(stats.values()))
    (tmp_path / "sr.dcm").write_bytes(dataset_bytes(sr))

    read = hd.sr.srread(tmp_path / "sr.dcm")
    groups = read.content.get_volumetric_roi_measurement_groups()
    by_label = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert [g.referenced_segment.referenced_segment_numbers for g in groups] == [[1], [2]]
    edited, unedited = (_edit_items(g) for g in groups)
    code = {key: value for key, (value, _) in EDIT_CODES.items()}
    assert edited[code["edited"]].value.meaning == "Yes" and unedited[code["edited"]].value.meaning == "No"
    assert set(unedited) == {code["edited"]}  # how much: only where the segment was edited
    s1 = stats[1]
    ai_volume = edited[f"ai {EDIT_CODES['ai_method'][1]}"]
    assert ai_volume.value == pytest.approx(s1.ai_volume_ml) and ai_volume.unit.value == "mL"
    assert edited[code["added"]].value == pytest.approx(s1.added_ml) and edited[code["added"]].unit.value == "mL"
    assert edited[code["removed"]].value == pytest.approx(s1.removed_ml) and s1.added_ml > 0 and s1.removed_ml > 0
    assert edited[code["dice"]].value == pytest.approx(s1.dice) and edited[code["dice"]].unit.value == "1"
    assert 0 < s1.dice < 1
    assert edited[code["hd95"]].value == pytest.approx(s1.hd95_mm) and edited[code["hd95"]].unit.value == "mm"
    corrected_volume = [m for m in groups[0].get_measurements() if m.name.meaning == "Volume" and m.method is None]
    assert corrected_volume[0].value == pytest.approx(s1.corrected_volume_ml)
    assert by_label[1] == card.label(1).name
    schemes = pydicom.dcmread(tmp_path / "sr.dcm").CodingSchemeIdentificationSequence
    assert PRIVATE_SCHEME in [item.CodingSchemeDesignator for item in schemes]

    unknown = build_measurement_report(seg, measurements, source, card, edited=True)
    (tmp_path / "unknown.dcm").write_bytes(dataset_bytes(unknown))
    groups = hd.sr.srread(tmp_path / "unknown.dcm").content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2 and all(not _edit_items(g) for g in groups)

    tool = _tool("dciodvfy")
    result = subprocess.run([tool, str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]
    assert errors == [], errors



def test_export_with_the_ai_labels_measures_the_edit(ct, ct_model, tmp_path, capsys):
    """`medseg export --ai-labels`: the saved AI label map (on a cropped grid, as any grid) against the .seg.nrrd,
    on the source grid: SEMIAUTOMATIC and the SR's edit items when a voxel changed, AUTOMATIC and "No" when none did;
    --ai-labels with --unedited, or with values that are not the model's labels, refused with nothing written."""
    from medseg.dicom.sr import EDIT_CODES
    from medseg.edits import compare_masks
    from medseg.geometry import Geometry
    from medseg.io import write_image

    ai, geometry = _label_map(ct)
    corrected = ai.copy()
    corrected[2:9, 150:260, 180:220] = 0
    card = ModelCard.from_json(_card_json(ct_model))
    write_segmentation(tmp_path / "c.seg.nrrd", corrected, geometry, card.labels)
    origin = geometry.index_to_lps([100, 100, 1])[0]
    crop = Geometry(geometry.spacing, tuple(origin), geometry.direction)
    write_image(tmp_path / "c_ai.nii.gz", ai[1:18, 100:400, 100:400].astype(np.uint8), crop)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["export", str(tmp_path / "c.seg.nrrd"), "--source", str(ct), "--model", str(ct_model), "--dicom-seg",
            str(out / "seg.dcm"), "--dicom-sr", str(out / "sr.dcm")]
    assert main([*argv, "--ai-labels", str(tmp_path / "c_ai.nii.gz")]) == 0
    assert {s.SegmentAlgorithmType for s in pydicom.dcmread(out / "seg.dcm").SegmentSequence} == {"SEMIAUTOMATIC"}
    groups = hd.sr.srread(out / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    first, second = (_edit_items(g) for g in groups)
    expected = compare_masks(ai, corrected, geometry, [(1, card.label(1).name)])[0]
    assert first["E0001"].value.meaning == "Yes" and second["E0001"].value.meaning == "No"
    assert first["E0004"].value == pytest.approx(expected.removed_ml) and expected.removed_ml > 0
    assert first["E0003"].value == 0 and first["E0005"].value == pytest.approx(expected.dice)
    assert first[f"ai {EDIT_CODES['ai_method'][1]}"].value == pytest.approx(expected.ai_volume_ml)
    capsys.readouterr()
    if shutil.which("pdftotext") and importlib.util.find_spec("reportlab"):  # the PDF says it too
        assert main([*argv[:6], "--pdf", str(out / "r.pdf"), "--ai-labels", str(tmp_path / "c_ai.nii.gz")]) == 0
        text = " ".join(subprocess.run(["pdftotext", str(out / "r.pdf"), "-"], capture_output=True, text=True,
                                       check=True).stdout.split())
        assert f"AI {expected.ai_volume_ml:.2f} mL, edited {expected.corrected_volume_ml:.2f} mL" in text
        capsys.readouterr()

    write_image(tmp_path / "same_ai.nii.gz", corrected.astype(np.uint8), geometry)
    same = tmp_path / "same"
    same.mkdir()
    argv_same = [*argv[:7], str(same / "seg.dcm"), "--dicom-sr", str(same / "sr.dcm")]
    assert main([*argv_same, "--ai-labels", str(tmp_path / "same_ai.nii.gz")]) == 0
    assert {s.SegmentAlgorithmType for s in pydicom.dcmread(same / "seg.dcm").SegmentSequence} == {"AUTOMATIC"}
    groups = hd.sr.srread(same / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert [{k: v.value.meaning for k, v in _edit_items(g).items()} for g in groups] == [{"E0001": "No"}] * 2
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    argv_empty = [*argv[:7], str(empty / "seg.dcm"), "--dicom-sr", str(empty / "sr.dcm")]
    _refused(capsys, empty, [*argv_empty, "--ai-labels", str(tmp_path / "c_ai.nii.gz"), "--unedited"],
             "give one")
    bad = ai.astype(np.uint8)
    bad[0, 0, 0] = 7
    write_image(tmp_path / "bad_ai.nii.gz", bad, geometry)
    _refused(capsys, empty, [*argv_empty, "--ai-labels", str(tmp_path / "bad_ai.nii.gz")],
             "values [7] are not label ids of model tiny-ct")


def test_non_ascii_patient_name_is_kept(ct, ct_model, tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for f in ct.iterdir():
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müller^Jörg"
        ds.save_as(folder / f.name)
    labels, geometry = _label_map(ct)
    card = ModelCard.from_json(_card_json(ct_model))
    write_segmentation(tmp_path / "l.seg.nrrd", labels, geometry, card.labels)
    assert main(["export", str(tmp_path / "l.seg.nrrd"), "--source", str(folder), "--model", str(ct_model),
                 "--dicom-seg", str(tmp_path / "seg.dcm"), "--dicom-sr", str(tmp_path / "sr.dcm")]) == 0
    for name in ("seg.dcm", "sr.dcm"):
        assert str(pydicom.dcmread(tmp_path / name).PatientName) == "Müller^Jörg"


# --------------------------------------------------------------------------------------------- bad inputs


def _refused(capsys, out: Path, argv: list[str], message: str) -> None:
    before = sorted(p.name for p in out.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, no temporary left


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(shared_data, ct, ct_model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dicom = ["--dicom-seg", str(out / "seg.dcm"), "--dicom-sr", str(out / "sr.dcm")]
    segment = ["segment", "--model", str(ct_model), "--output", str(out / "l.seg.nrrd"), "--no-progress", *dicom]
    nifti = shared_data / "examples/totalsegmentator/example_ct_sm.nii.gz"
    _refused(capsys, out, [*segment, str(nifti)], "a DICOM SEG references its source DICOM series: give the DICOM "
                                                  "folder as input, or use medseg export SEG.seg.nrrd --source")
    _refused(capsys, out, [*segment, str(shared_data / NO_UIDS)], "has empty or missing UIDs: StudyInstanceUID")
    missing = tmp_path / "missing"
    shutil.copytree(ct, missing)
    sorted(missing.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))[10].unlink()
    _refused(capsys, out, [*segment, str(missing)], "missing slices")
    _refused(capsys, out, ["segment", str(ct), "--model", str(ct_model), "--output", str(out / "l.seg.nrrd"),
                           "--dicom-sr", str(out / "sr.dcm")], "give --dicom-seg FILE too")
    labels, geometry = _label_map(ct)
    write_segmentation(tmp_path / "l.seg.nrrd", labels, geometry, ModelCard.from_json(_card_json(ct_model)).labels)
    export = ["export", str(tmp_path / "l.seg.nrrd"), "--model", str(ct_model), *dicom]
    _refused(capsys, out, [*export, "--source", str(missing)], "missing slices")
    _refused(capsys, out, [*export, "--source", str(shared_data / NO_UIDS)], "SOPInstanceUID")
    _refused(capsys, out, [*export, "--source", str(nifti)], "is not a DICOM series folder")
