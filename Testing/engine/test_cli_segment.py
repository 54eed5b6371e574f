"""``medseg segment`` end to end on real data, and every bad input refused with nothing written."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.cli import main
from medseg.io import read_image, read_segmentation
from medseg.models import build_model


def _checkpoint(path, in_channels=1):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=in_channels, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model)
    d["patch_size"] = [32, 48, 32]
    if in_channels == 2:
        d["inputs"] = d["inputs"] + [{"name": "T2w", "modality": "MR", "normalization": {"kind": "zscore"}}]
    return save_checkpoint(path, model, ModelCard.from_dict(d))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def sample(samples):
    return str(samples / "hippocampus_001_T1w.nii.gz")


def test_segment_end_to_end_as_a_user_runs_it(tmp_path, ckpt, sample):
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "medseg", "segment", sample, "--model", str(ckpt), "--output",
           str(out / "seg.seg.nrrd"), "--probabilities", str(out / "p.nii.gz"), "--uncertainty", str(out / "u.nrrd"),
           "--activation", str(out / "cam.nii.gz"), "--activation-class", "posterior hippocampus",
           "--report", str(out / "report.json"), "--overview", str(out / "overview.png"),
           "--tta", "--overlap", "0.25", "--postprocess", "largest",
           "--device", "cpu", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "100.0% done" in result.stderr  # the progress bar reached the end
    image, geometry = read_image(sample)
    labels, seg_geometry, segments = read_segmentation(out / "seg.seg.nrrd")
    assert labels.shape == image.shape and seg_geometry == geometry
    assert [s.name for s in segments] == ["anterior hippocampus", "posterior hippocampus"]
    report = json.loads((out / "report.json").read_text())
    for row in report["labels"]:
        count = int((labels == row["label_id"]).sum())
        assert row["voxel_count"] == count
        assert row["volume_ml"] == pytest.approx(count * geometry.voxel_volume_ml)
        assert row["volume_interval_ml"] is not None
    assert report["run"]["passes"] == 8
    assert [r["id"] for r in report["review"]["regions"]] == list(range(1, len(report["review"]["regions"]) + 1))
    assert [s["name"] for s in report["review"]["segments"]] == ["anterior hippocampus", "posterior hippocampus"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cam.nii.gz", "overview.png", "p_anterior_hippocampus.nii.gz", "p_posterior_hippocampus.nii.gz",
                     "report.json", "seg.seg.nrrd", "u.nrrd", "u_tta_variance.nrrd"]
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cam, _ = read_image(out / "cam.nii.gz")
    assert cam.shape == image.shape and 0 <= cam.min() and cam.max() <= 1


def test_segment_real_ct_dicom_series(tmp_path, shared_data):
    """A DICOM folder in, a label map out on its grid (a 1-channel model; values are untrained)."""
    ckpt = _checkpoint(tmp_path / "m.safetensors")
    dicom = shared_data / "examples" / "totalsegmentator" / "dicom"
    assert main(["segment", str(dicom), "--model", str(ckpt), "--output", str(tmp_path / "l.nii.gz"),
                 "--device", "cpu", "--overlap", "0", "--no-progress", "--roi", "0", "64", "0", "64", "0", "20"]) == 0
    labels, geometry = read_image(tmp_path / "l.nii.gz")
    image, image_geometry = read_image(dicom)
    assert labels.shape == image.shape and geometry == image_geometry
    assert labels[:, 64:, :].max() == 0  # outside the ROI


def _write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    image.SetOrigin(origin[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return str(path)


def _write4d(path, vol):
    series = sitk.JoinSeries([sitk.GetImageFromArray(vol), sitk.GetImageFromArray(vol)])
    sitk.WriteImage(series, str(path))
    return str(path)


def _bad_inputs(tmp_path, sample, ckpt):
    vol = np.random.default_rng(0).normal(size=(20, 24, 22)).astype(np.float32)
    good = _write(tmp_path / "good.nrrd", vol)
    truncated = tmp_path / "cut.nii.gz"
    data = open(sample, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    nan = vol.copy()
    nan[3, 4, 5] = np.nan
    wrong_card = tmp_path / "wrong.safetensors"
    from safetensors.torch import load_file, save_file
    d = json.loads(subprocess.run([sys.executable, "-m", "medseg", "info", str(ckpt), "--json"],
                                  capture_output=True, text=True).stdout)
    d["architecture_args"]["width"] = 0.125
    save_file(load_file(ckpt), wrong_card, metadata={"medseg.card": json.dumps(d)})
    two = str(_checkpoint(tmp_path / "two.safetensors", in_channels=2))
    one = str(ckpt)
    return {
        "missing file": ([str(tmp_path / "nope.nii.gz")], one, [], "nope.nii.gz"),
        "truncated": ([str(truncated)], one, [], "cut.nii.gz"),
        "2D image": ([_write(tmp_path / "flat.nrrd", vol[0])], one, [], "3D"),
        "4D image": ([_write4d(tmp_path / "four.nrrd", vol)], one, [], "4D"),
        "NaN voxels": ([_write(tmp_path / "nan.nrrd", nan)], one, [], "NaN"),
        "wrong channel count": ([good, good], one, [], "expects 1 input channel"),
        "channels on different grids": ([good, _write(tmp_path / "moved.nrrd", vol, origin=(5.0, 0.0, 0.0))],
                                        two, [], "origin"),
        "ROI outside": ([good], one, ["--roi", "0", "30", "0", "5", "0", "5"], "region of interest"),
        "unknown model": ([good], "no-such-model", [], "unknown model 'no-such-model'"),
        "card does not match weights": ([good], str(wrong_card), [], "do not match the card"),
        "unsupported output": ([good], one, ["--output-override", "x.png"], "--output"),
    }


def test_bad_input_is_refused_and_nothing_is_written(tmp_path, sample, ckpt, capsys):
    cases = _bad_inputs(tmp_path, sample, ckpt)
    for name, (inputs, model, extra, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        out.mkdir()
        output = str(out / "seg.seg.nrrd")
        if extra[:1] == ["--output-override"]:
            output, extra = str(out / extra[1]), []
        code = main(["segment", *inputs, "--model", model, "--output", output, "--report", str(out / "r.json"),
                     "--device", "cpu", "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2, name
        assert "error:" in err and "Traceback" not in err, name
        assert re.search(message, err), f"{name}: {err}"
        assert list(out.iterdir()) == [], f"{name}: wrote {list(out.iterdir())}"
