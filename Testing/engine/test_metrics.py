"""Evaluation metrics (against MONAI's implementation) and ``medseg evaluate`` on the sample cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_cli_segment import _checkpoint

from medseg.catalog import resources_dir
from medseg.cli import main
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.metrics import score_label, surface_distances

SPACING = (0.8, 1.0, 2.5)  # x y z mm


def _balls():
    k, j, i = np.indices((30, 48, 50))
    a = ((k - 15) * 2.5) ** 2 + (j - 24) ** 2 + ((i - 25) * 0.8) ** 2 < 14**2
    b = ((k - 16) * 2.5) ** 2 + (j - 21) ** 2 + ((i - 27) * 0.8) ** 2 < 12**2
    return a, b


def test_overlap_and_volume():
    a, b = _balls()
    s = score_label(a, b, Geometry(SPACING))
    inter = (a & b).sum()
    assert s.dice == pytest.approx(2 * inter / (a.sum() + b.sum()))
    assert s.iou == pytest.approx(inter / (a | b).sum())
    assert s.volume_error_ml == pytest.approx((a.sum() - b.sum()) * 0.8 * 2.5 / 1000)


@pytest.fixture(scope="module")
def case_001():
    """The bundled hippocampus model's labels for sample case 001 and the reference: real masks, real errors."""
    samples = resources_dir() / "Samples"
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    reference, _ = read_image(samples / "hippocampus_001_label.nii.gz")
    result = Segmenter("hippocampus-unet3d", device="cpu").segment(image, geometry, SegmentOptions(measure=False))
    return result.labels, reference, geometry


@pytest.mark.parametrize("spacing", [None, SPACING], ids=["file", "anisotropic"])
def test_surface_metrics_equal_monais_on_real_masks(case_001, spacing):
    """HD95, ASD and NSD as MONAI computes them (its defaults: edge voxels, Euclidean, voxel counts)."""
    metrics = pytest.importorskip("monai.metrics", reason="MONAI is a test-only dependency")
    labels, reference, geometry = case_001
    geometry = geometry if spacing is None else Geometry(spacing)
    zyx = geometry.spacing[::-1]  # MONAI takes the array axes' spacing
    pooled_below_hd95 = []
    for c in (1, 2):
        pred, ref = (torch.from_numpy(m == c)[None, None].float() for m in (labels, reference))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = metrics.compute_hausdorff_distance(pred, ref, percentile=95, spacing=zyx).item()
            asd = metrics.compute_average_surface_distance(pred, ref, symmetric=True, spacing=zyx).item()
        assert hd95 > 0
        for tolerance in (0.5, 1.0, 2.0):
            s = score_label(labels == c, reference == c, geometry, nsd_tolerance_mm=tolerance)
            nsd = metrics.compute_surface_dice(pred, ref, [tolerance], include_background=True, spacing=zyx).item()
            assert s.nsd == pytest.approx(nsd, abs=1e-6), f"label {c}, NSD at {tolerance} mm"
            assert s.nsd_tolerance_mm == tolerance
        assert s.hd95_mm == pytest.approx(hd95, rel=1e-5), f"label {c}"
        assert s.asd_mm == pytest.approx(asd, rel=1e-5), f"label {c}"
        to_ref, to_pred = surface_distances(labels == c, reference == c, geometry)
        pooled_below_hd95.append(np.percentile(np.concatenate([to_ref, to_pred]), 95) < s.hd95_mm - 0.1)
    assert any(pooled_below_hd95), "the pooled percentile is what MONAI's HD95 is not: it differs on this case"


def test_surface_metrics_of_identical_and_shifted_masks():
    a, _ = _balls()
    same = score_label(a, a, Geometry(SPACING))
    assert same.hd95_mm == same.asd_mm == 0.0 and same.nsd == 1.0
    shifted = np.roll(a, 2, axis=0)  # 2 slices of 2.5 mm: no surface point is more than 5 mm from the other
    s = score_label(shifted, a, Geometry(SPACING), nsd_tolerance_mm=5.0)
    assert s.nsd == 1.0 and 0 < s.hd95_mm <= 5.0
    assert score_label(shifted, a, Geometry(SPACING), nsd_tolerance_mm=1.0).nsd < 1.0
    with pytest.raises(ValueError, match="NSD tolerance"):
        score_label(a, a, Geometry(), nsd_tolerance_mm=-1.0)


def test_empty_masks_leave_surface_metrics_undefined():
    a, _ = _balls()
    empty = np.zeros_like(a)
    both = score_label(empty, empty, Geometry())
    assert both.dice == both.iou == 1.0 and both.hd95_mm is both.asd_mm is both.nsd is None
    for missed in (score_label(empty, a, Geometry()), score_label(a, empty, Geometry())):
        assert missed.dice == missed.nsd == 0.0 and missed.hd95_mm is missed.asd_mm is None  # NSD: as MONAI


def test_evaluate_writes_the_documented_json(tmp_path, samples, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for case in ("001", "003"):
        (images / f"hippocampus_{case}.nii.gz").write_bytes((samples / f"hippocampus_{case}_T1w.nii.gz").read_bytes())
        (labels / f"hippocampus_{case}.nii.gz").write_bytes(
            (samples / f"hippocampus_{case}_label.nii.gz").read_bytes())
    # case 003's reference without its posterior hippocampus: its surface metrics are undefined, not dropped
    path = str(labels / "hippocampus_003.nii.gz")
    reference = sitk.ReadImage(path)
    sitk.WriteImage(reference * sitk.Cast(reference != 2, reference.GetPixelID()), path)
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(ckpt), "--images", str(images), "--labels", str(labels), "--json",
                 str(out), "--csv", str(tmp_path / "eval.csv"), "--device", "cpu", "--nsd-tolerance-mm", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["cases"] == 2 and len(data["per_case"]) == 2
    assert data["nsd_tolerance_mm"] == data["options"]["nsd_tolerance_mm"] == 2.0 and "undefined" in data[
        "undefined_policy"]
    assert set(data["labels"]) == {"anterior hippocampus", "posterior hippocampus"}
    for name, scores in data["labels"].items():
        assert {"dice", "iou", "hd95_mm", "asd_mm", "nsd", "volume_error_ml", "n", "n_undefined"} <= set(scores)
        for metric in ("dice", "hd95_mm", "asd_mm", "nsd"):  # NSD is 0 (defined) when one mask is empty
            values = [c["labels"][name][metric] for c in data["per_case"]]
            assert scores["n_undefined"][metric] == values.count(None)
            assert scores["n"][metric] + scores["n_undefined"][metric] == 2
            known = [v for v in values if v is not None]
            assert scores[metric] == (pytest.approx(np.mean(known)) if known else None)
    posterior = data["labels"]["posterior hippocampus"]
    assert posterior["n_undefined"]["dice"] == 0 and posterior["n_undefined"]["hd95_mm"] >= 1
    assert data["per_case"][1]["labels"]["posterior hippocampus"]["hd95_mm"] is None
    table = capsys.readouterr().out
    assert "nsd@2mm" in table and f"{posterior['n_undefined']['hd95_mm']} undefined" in table
    csv = (tmp_path / "eval.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 2 and "nsd" in csv[0].split(",") and "nsd_tolerance_mm" in csv[0].split(",")
    assert isinstance(data["mean_dice"], float)
    assert data["options"]["postprocessing"] == {"largest_component": False, "fill_holes": False,
                                                 "min_island_ml": 0.0, "source": "card"}  # a card without a default
    assert data["options"]["tta"] is False
    # the clean-up a user can ask of `segment` is scored as such: one component per label at most
    assert main(["evaluate", "--model", str(ckpt), "--images", str(images), "--labels", str(labels), "--json",
                 str(out), "--device", "cpu", "--postprocess", "largest"]) == 0
    cleaned = json.loads(out.read_text())
    assert cleaned["options"]["postprocessing"] == {"largest_component": True, "fill_holes": False,
                                                    "min_island_ml": 0.0, "source": "options"}
