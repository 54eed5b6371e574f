"""Evaluation metrics (against MONAI's implementation) and ``medseg evaluate`` on the sample cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli_segment import _checkpoint

from medseg.cli import main
from medseg.geometry import Geometry
from medseg.metrics import score_label

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


def test_surface_distances_agree_with_monai():
    metrics = pytest.importorskip("monai.metrics", reason="MONAI is a test-only dependency")
    a, b = _balls()
    s = score_label(a, b, Geometry(SPACING))
    spacing = SPACING[::-1]  # MONAI takes the array axes' spacing
    pa, pb = a[None, None].astype(float), b[None, None].astype(float)
    hd95 = metrics.compute_hausdorff_distance(pa, pb, percentile=95, spacing=spacing).item()
    asd = metrics.compute_average_surface_distance(pa, pb, symmetric=True, spacing=spacing).item()
    assert s.hd95_mm == pytest.approx(hd95, rel=0.15, abs=0.5)
    assert s.asd_mm == pytest.approx(asd, rel=0.1)


def test_empty_masks():
    a, _ = _balls()
    empty = np.zeros_like(a)
    assert score_label(empty, empty, Geometry()).dice == 1.0
    missed = score_label(empty, a, Geometry())
    assert missed.dice == 0.0 and missed.hd95_mm is None


def test_evaluate_writes_the_documented_json(tmp_path, samples):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for case in ("001", "003"):
        (images / f"hippocampus_{case}.nii.gz").write_bytes((samples / f"hippocampus_{case}_T1w.nii.gz").read_bytes())
        (labels / f"hippocampus_{case}.nii.gz").write_bytes(
            (samples / f"hippocampus_{case}_label.nii.gz").read_bytes())
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(ckpt), "--images", str(images), "--labels", str(labels), "--json",
                 str(out), "--csv", str(tmp_path / "eval.csv"), "--device", "cpu"]) == 0
    data = json.loads(out.read_text())
    assert data["cases"] == 2 and len(data["per_case"]) == 2
    assert set(data["labels"]) == {"anterior hippocampus", "posterior hippocampus"}
    for scores in data["labels"].values():
        assert {"dice", "iou", "hd95_mm", "volume_error_ml"} <= set(scores)
    assert isinstance(data["mean_dice"], float)
    assert len((tmp_path / "eval.csv").read_text().splitlines()) == 1 + 2 * 2
    assert data["options"]["postprocess"] == [] and data["options"]["tta"] is False
    # the clean-up a user can ask of `segment` is scored as such: one component per label at most
    assert main(["evaluate", "--model", str(ckpt), "--images", str(images), "--labels", str(labels), "--json",
                 str(out), "--device", "cpu", "--postprocess", "largest"]) == 0
    cleaned = json.loads(out.read_text())
    assert cleaned["options"]["postprocess"] == ["largest"]
