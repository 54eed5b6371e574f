"""The PDF report: radiological key images whatever the voxel order, identifiers, volumes, model, disclaimer."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

from medseg.card import Label
from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import read_card
from medseg.geometry import Geometry
from medseg.io import read_image
from medseg.measure import measure_labels
from medseg.orientation import reorientation
from medseg.report_pdf import DisplayVolume, PdfReport, dicom_identifiers, figure_rgb, key_image_figure, write_pdf

pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")
pytest.importorskip("reportlab", reason="the report extra (reportlab) is not installed")

LEFT, SUPERIOR, ANTERIOR = 1000.0, 700.0, 400.0
SPECS = [Label(0, "background", (0, 0, 0)), Label(1, "lesion", (0, 200, 0))]


def _phantom():
    """An LPS-ordered volume (i -> left, j -> posterior, k -> superior) with markers on the patient's left
    (through every slice), at the top (superior) and at the front (anterior), and a segment in the middle."""
    image = np.full((24, 32, 40), 100.0, dtype=np.float32)
    image[:, 14:18, 32:36] = LEFT  # high i: the patient's left
    image[20:, :, 18:22] = SUPERIOR  # high k: superior
    image[10:14, 1:4, 4:8] = ANTERIOR  # low j: anterior
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[8:16, 12:20, 16:24] = 1
    return image, labels, Geometry((1.5, 1.0, 2.0), (-30.0, 20.0, 5.0))


def _orders():
    """The same phantom stored in two voxel orders: LPS, and a permuted, flipped one (IAR)."""
    image, labels, geometry = _phantom()
    turn = reorientation(geometry, labels.shape, "IAR")
    return [(image, labels, geometry), (turn.apply(image), turn.apply(labels), turn.geometry)]


def _bright_columns(plane_image: np.ndarray, value: float) -> np.ndarray:
    return np.nonzero((plane_image == value).any(axis=0))[0]


@pytest.mark.parametrize("order", [0, 1])
def test_planes_are_radiological_whatever_the_voxel_order(order):
    image, labels, geometry = _orders()[order]
    assert labels.shape == ((24, 32, 40) if order == 0 else (40, 32, 24))
    (m,) = measure_labels(labels, geometry, SPECS)
    axial, coronal, sagittal = DisplayVolume.from_arrays(image, labels, geometry).planes(m.centroid_lps)
    width = axial.image.shape[1]
    assert _bright_columns(axial.image, LEFT).min() > width / 2  # patient's left on the image's right
    assert _bright_columns(coronal.image, LEFT).min() > width / 2
    assert axial.letters == ("A", "P", "R", "L") and coronal.letters == ("S", "I", "R", "L")
    assert np.nonzero((coronal.image == SUPERIOR).any(axis=1))[0].max() < coronal.image.shape[0] / 2  # top
    assert sagittal.letters == ("S", "I", "A", "P")
    sagittal_at_anterior = DisplayVolume.from_arrays(image, labels, geometry).planes(
        geometry.index_to_lps(np.argwhere(image == ANTERIOR)[0][::-1].astype(float))[0])[2]
    assert _bright_columns(sagittal_at_anterior.image, ANTERIOR).max() < sagittal.image.shape[1] / 2  # left
    assert axial.pixel_mm == (1.0, 1.5) and coronal.pixel_mm == (2.0, 1.5)


def _axial_white_pixels(fig) -> tuple[np.ndarray, tuple[float, float]]:
    """Columns of near-white rendered pixels inside the axial axes, and that axes' pixel column range."""
    rgb = figure_rgb(fig)
    ax = fig.axes[0]
    box = ax.get_window_extent()
    height = rgb.shape[0]
    rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
    cols = slice(int(box.x0) + 2, int(box.x1) - 2)
    white = np.all(rgb[rows, cols] > 235, axis=-1)
    return np.nonzero(white.any(axis=0))[0] + cols.start, (box.x0, box.x1)


def test_rendered_key_images_show_the_left_marker_on_the_right_in_both_orders():
    rendered = []
    for image, labels, geometry in _orders():
        (m,) = measure_labels(labels, geometry, SPECS)
        fig = key_image_figure(DisplayVolume.from_arrays(image, labels, geometry), m, {1: (0, 200, 0)})
        columns, (x0, x1) = _axial_white_pixels(fig)
        assert len(columns) > 0 and columns.min() > (x0 + x1) / 2, "the left marker must be on the image's right"
        texts = {t.get_text(): t.get_position() for t in fig.axes[0].texts}
        assert texts["R"][0] < 0.5 < texts["L"][0] and texts["A"][1] > 0.5 > texts["P"][1]
        assert any(t.get_text().endswith(" mm") for t in fig.axes[0].texts)  # the scale bar's label
        rendered.append(figure_rgb(fig))
    assert np.array_equal(rendered[0], rendered[1])  # the voxel order changes nothing on the page


def _sample_report(samples, **changes) -> PdfReport:
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    labels, _ = read_image(samples / "hippocampus_001_label.nii.gz")
    labels = labels.astype(np.uint8)
    card = read_card(resolve_checkpoint("hippocampus-unet3d"))
    passes = {1: [1.5, 1.7, 1.6], 2: [1.8, 1.9, 2.0]}
    measurements = measure_labels(labels, geometry, card.labels, image, volume_passes_ml=passes)
    overlay = np.clip(np.abs(np.gradient(labels.astype(np.float32))[0]), 0, 1)
    fields = dict(image=image, labels=labels, geometry=geometry, card=card, measurements=measurements,
                  overlay=overlay, overlay_name="uncertainty (normalised entropy)",
                  identifiers={"PatientName": "Müller^Jürgen", "PatientID": "P-12", "StudyDate": "20260102",
                               "Modality": "MR"})
    return PdfReport(**{**fields, **changes})


def _pdf_text(path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (Debian poppler-utils) is not installed: cannot read the PDF's text back")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, encoding="utf-8",
                          check=True).stdout


def test_pdf_says_who_what_how_large_which_model_and_not_a_diagnosis(tmp_path, samples):
    report = _sample_report(samples)
    path = tmp_path / "report.pdf"
    write_pdf(path, report)
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    text = " ".join(_pdf_text(path).split())
    for expected in ("Müller, Jürgen", "P-12", "2026-01-02", "MR", "not edited", "anterior hippocampus",
                     f"{report.measurements[0].volume_ml:.2f}", "1.50 - 1.70", "Validation Dice",
                     "anterior hippocampus 0.880", "MSD Task04 Hippocampus", "Not for clinical use",
                     "Not a diagnosis", "Radiological convention", "Heat map: uncertainty"):
        assert expected in text, expected
    pages = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, encoding="utf-8", check=True).stdout
    assert int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:"))) <= 2


def test_edited_mask_no_dicom_and_hostile_card_text(tmp_path, samples):
    card = read_card(resolve_checkpoint("hippocampus-unet3d"))
    hostile = dataclasses.replace(card, description="<b>unclosed & <font name=x> \x1b[31mred\x1b[0m \u202eevil",
                                  summary="a < b & c > d")
    report = _sample_report(samples, card=hostile, identifiers={}, edited=True, overlay=None,
                            source="case.nii.gz", warnings=("input spacing 3x coarser than training",))
    path = tmp_path / "edited.pdf"
    write_pdf(path, report)
    text = " ".join(_pdf_text(path).split())
    assert "edited by a user" in text and "not available: the input is not a DICOM series (case.nii.gz)" in text
    assert "<b>unclosed & <font name=x>" in text and "\x1b" not in text and "\u202e" not in text
    assert "a < b & c > d" in text and "3x coarser than training" in text


def test_pdf_pages_render(tmp_path, samples):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (Debian poppler-utils) is not installed: cannot render the pages")
    path = tmp_path / "report.pdf"
    write_pdf(path, _sample_report(samples))
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(path), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert 1 <= len(pages) <= 2 and all(p.stat().st_size > 1000 for p in pages)


def test_dicom_identifiers_with_their_character_set(tmp_path, shared_data):
    pydicom = pytest.importorskip("pydicom")
    series = shared_data / "examples" / "totalsegmentator" / "dicom_repaired"
    ids = dicom_identifiers(series)
    assert ids["Modality"] == "CT" and ids["PatientName"] == "Demo^TotalSegmentator" and ids["StudyDate"] == "20221208"
    source = sorted(series.glob("*.dcm"))[0]
    for charset, name in (("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Ωμέγα^Ψ")):
        ds = pydicom.dcmread(source)
        ds.SpecificCharacterSet, ds.PatientName = charset, name
        folder = tmp_path / charset.replace(" ", "_")
        folder.mkdir()
        ds.save_as(folder / "one.dcm")
        assert dicom_identifiers(folder)["PatientName"] == name
    assert dicom_identifiers(tmp_path) == {}


# ---------------------------------------------------------------------------------------------- command line


def test_segment_writes_the_pdf_and_meshes_with_its_other_outputs(tmp_path, samples, capsys):
    """The bundled model on the sample: real segments, their meshes where the label map is, the PDF with them."""
    from medseg.cli import main

    trimesh = pytest.importorskip("trimesh", reason="the meshes extra (trimesh) is not installed")
    pytest.importorskip("skimage", reason="the meshes extra (scikit-image) is not installed")
    out = tmp_path / "out"
    (out / "meshes").mkdir(parents=True)
    code = main(["segment", str(samples / "hippocampus_001_T1w.nii.gz"), "--model", "hippocampus-unet3d",
                 "--output", str(out / "seg.nii.gz"), "--pdf", str(out / "report.pdf"), "--meshes",
                 str(out / "meshes"), "--device", "cpu", "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["meshes", "report.pdf", "seg.nii.gz"]
    assert sorted(p.name for p in (out / "meshes").iterdir()) == [
        "anterior_hippocampus.obj", "anterior_hippocampus.stl", "posterior_hippocampus.obj",
        "posterior_hippocampus.stl"]
    labels, geometry = read_image(out / "seg.nii.gz")
    for label_id, name in ((1, "anterior_hippocampus"), (2, "posterior_hippocampus")):
        mesh = trimesh.load(out / "meshes" / f"{name}.stl", force="mesh")
        voxels = labels == label_id
        assert mesh.is_watertight and mesh.volume / 1000 == pytest.approx(voxels.sum() * geometry.voxel_volume_ml,
                                                                           rel=0.03)
        centroid = geometry.index_to_lps(np.argwhere(voxels)[:, ::-1].mean(0))[0]
        assert np.linalg.norm(mesh.center_mass - centroid) < min(geometry.spacing)
    text = " ".join(_pdf_text(out / "report.pdf").split())
    assert "Heat map: uncertainty" in text  # --pdf computes the uncertainty for its heat map
    assert "anterior hippocampus" in text and "not available: the input is not a DICOM series" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--pdf", "{out}/report.txt"], "--pdf .*: the report is a .pdf file"),
    (["--pdf", "{out}/r.pdf", "--report", "{out}/r.pdf"], "--report and --pdf both write"),
    (["--pdf", "{out}/missing/r.pdf"], "output folder of .* does not exist"),
])
def test_bad_pdf_paths_are_refused_before_any_work(tmp_path, samples, tiny_checkpoint, capsys, extra, message):
    import re

    from medseg.cli import main

    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(out=out) for a in extra]
    code = main(["segment", str(samples / "hippocampus_001_T1w.nii.gz"), "--model", str(tiny_checkpoint),
                 "--output", str(out / "seg.nii.gz"), *args, "--device", "cpu", "--no-progress"])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(out.iterdir()) == []


def test_export_writes_the_pdf_and_meshes_of_a_saved_segmentation(tmp_path, shared_data, capsys):
    """``medseg export SEG --source DICOM_DIR --pdf --meshes``: identifiers from the series, 'may have been edited'."""
    from medseg.cli import main
    from medseg.io import write_segmentation

    pytest.importorskip("trimesh", reason="the meshes extra (trimesh) is not installed")
    pytest.importorskip("skimage", reason="the meshes extra (scikit-image) is not installed")
    series = shared_data / "examples" / "totalsegmentator" / "dicom_repaired"
    image, geometry = read_image(series)
    card = read_card(resolve_checkpoint("hippocampus-unet3d"))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[5:12, 200:240, 150:190] = 1  # on the patient's right (low i in this LPS series)
    labels[6:10, 250:280, 330:360] = 2
    saved = tmp_path / "corrected.seg.nrrd"
    write_segmentation(saved, labels, geometry, card.labels)
    out = tmp_path / "out"
    (out / "meshes").mkdir(parents=True)
    code = main(["export", str(saved), "--source", str(series), "--model", "hippocampus-unet3d",
                 "--pdf", str(out / "report.pdf"), "--meshes", str(out / "meshes")])
    assert code == 0, capsys.readouterr().err
    assert len(list((out / "meshes").iterdir())) == 4
    text = " ".join(_pdf_text(out / "report.pdf").split())
    assert "Demo, TotalSegmentator" in text and "MEDSEG-DEMO" in text and "2022-12-08" in text
    assert "may have been edited" in text
    assert f"{(labels == 1).sum() * geometry.voxel_volume_ml:.2f}" in text


def test_many_labels_stay_on_two_pages(tmp_path, shared_data):
    """117 labels (TotalSegmentator's map, 41 present): the table lists the found ones, the rest in one line."""
    folder = shared_data / "examples" / "totalsegmentator"
    image, geometry = read_image(folder / "example_ct_sm.nii.gz")
    labels = read_image(folder / "example_seg.nii.gz")[0].astype(np.uint8)
    card = read_card(resolve_checkpoint("hippocampus-unet3d"))
    specs = (Label(0, "background", (0, 0, 0)), *(Label(i, f"organ {i}", (40 + i, 90, 200 - i)) for i in range(1, 118)))
    card = dataclasses.replace(card, labels=specs)
    measurements = measure_labels(labels, geometry, card.labels)
    path = tmp_path / "many.pdf"
    write_pdf(path, PdfReport(image, labels, geometry, card, measurements))
    text = " ".join(_pdf_text(path).split())
    absent = [m.name for m in measurements if m.voxel_count == 0]
    assert len(absent) == 117 - len(np.unique(labels[labels > 0])) and f"Not found (0 mL): {absent[0]}," in text
    assert "Key images of the 3 largest of" in text
    pages = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, encoding="utf-8", check=True).stdout
    assert int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:"))) <= 2
