"""Inputs that used to give a wrong result without an error: non-finite voxels hidden by ITK's NIfTI reader,
sheared or scaled directions, DICOM series with missing, duplicated or uneven slices, constant volumes, and
inputs unlike the model's training data (a warning, not an error). Real files written here or copied from
../shared/data; each case checks the message, and the command line refuses with exit code 2 and writes nothing.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.cli import main
from medseg.domain import describe_inputs, domain_warnings
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.models import build_model

pydicom = pytest.importorskip("pydicom", reason="pydicom edits the DICOM test series (pip install -e '.[test]')")

CT_SERIES = "examples/totalsegmentator/dicom_repaired"
NO_UIDS = "examples/totalsegmentator/dicom"

# Measured by scripts/describe_training_inputs.py on hippocampus-unet3d's 166 training cases.
HIPPOCAMPUS_DOMAIN = {"cases": 166, "extent_mm": [[31.0, 43.0], [41.0, 59.0], [24.0, 47.0]],
                      "spacing_mm": [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
                      "channels": [{"name": "T1w", "p01": [4.0, 25601.1], "p99": [89.0, 486420.0]}]}


# --------------------------------------------------------------------------------------------- NIfTI on disk


def _nifti(tmp_path, name, array, slope=None, inter=None):
    """Write `array` as NIfTI with ITK, then set scl_slope/scl_inter in the header bytes (gzip after)."""
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(plain))
    data = bytearray(plain.read_bytes())
    if slope is not None:
        struct.pack_into("<ff", data, 112, slope, inter)
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
    return path


def _with_non_finite(dtype):
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(dtype)
    array[0, 0, :3] = np.nan
    array[3, 4, 5] = np.inf
    array[2, 2, 2] = -np.inf
    return array


@pytest.mark.parametrize("name", ["f32.nii", "f32.nii.gz", "f64.nii", "f64.nii.gz"])
def test_nan_and_inf_in_a_float_nifti_are_counted_on_disk(tmp_path, name):
    array = _with_non_finite(np.float32 if name.startswith("f32") else np.float64)
    path = _nifti(tmp_path, name, array)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what ITK alone returns
    with pytest.raises(ValueError, match=rf"{name} has 3 NaN and 2 infinite voxel\(s\) out of 120 stored in the "
                                         r"file.*numpy\.nan_to_num"):
        read_image(path)


def test_big_endian_nifti_is_checked_too(tmp_path):
    """A NIfTI-1 header and float32 voxels written big-endian by hand (as some older scanners' converters do)."""
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    array[0, 0, 0], array[1, 1, 1] = np.nan, np.inf
    header = bytearray(352)
    struct.pack_into(">i", header, 0, 348)
    struct.pack_into(">8h", header, 40, 3, 5, 4, 3, 1, 1, 1, 1)  # dim: x, y, z
    struct.pack_into(">hh", header, 70, 16, 32)  # float32
    struct.pack_into(">8f", header, 76, 1, 1, 1, 1, 0, 0, 0, 0)
    struct.pack_into(">fff", header, 108, 352, 1, 0)  # vox_offset, scl_slope, scl_inter
    header[344:348] = b"n+1\0"
    path = tmp_path / "big.nii"
    path.write_bytes(bytes(header) + array.astype(">f4").tobytes())
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).ravel()[0] == 0  # ITK alone: NaN became 0
    with pytest.raises(ValueError, match=r"big\.nii has 1 NaN and 1 infinite voxel\(s\) out of 60"):
        read_image(path)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_nan_and_inf_in_float64_nrrd_and_mha(tmp_path, ext):
    path = tmp_path / f"f64{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(_with_non_finite(np.float64)), str(path))
    with pytest.raises(ValueError, match=r"has 3 NaN and 2 infinite voxel\(s\) out of 120"):
        read_image(path)


@pytest.mark.parametrize(("slope", "inter", "message"), [
    (float("nan"), 0.0, r"scl_slope nan and scl_inter 0\.0, which are not finite"),
    (float("inf"), 0.0, r"scl_slope inf .*not finite"),
    (-float("inf"), 0.0, r"scl_slope -inf .*not finite"),
    (1.0, float("nan"), r"scl_inter nan, which are not finite"),
    (1.0, float("inf"), r"scl_inter inf, which are not finite"),
    (0.0, 5.0, r"scl_slope 0 with scl_inter 5\.0: .*ambiguous"),
    (1e38, 0.0, r"0 NaN and 51 infinite voxel"),  # scaled beyond float32
])
def test_nifti_intensity_scaling_that_itk_ignores_is_refused(tmp_path, slope, inter, message):
    stored = (np.arange(120).reshape(4, 5, 6) % 7).astype(np.int16)
    for name in ("s.nii", "s.nii.gz"):
        path = _nifti(tmp_path, name, stored, slope, inter)
        with pytest.raises(ValueError, match=message) as info:
            read_image(path)
        assert str(path) in str(info.value) and ("set_slope_inter(1, 0)" in str(info.value) or slope == 1e38)


def test_nifti_with_valid_or_no_scaling_is_read(tmp_path):
    stored = (np.arange(120).reshape(4, 5, 6) % 7).astype(np.int16)
    scaled, _ = read_image(_nifti(tmp_path, "s.nii.gz", stored, 2.0, 1.0))
    np.testing.assert_array_equal(scaled, 2.0 * stored + 1.0)
    unscaled, _ = read_image(_nifti(tmp_path, "z.nii", stored, 0.0, 0.0))  # the standard's "no scaling"
    np.testing.assert_array_equal(unscaled, stored)


def test_float16_cannot_be_stored_in_these_formats():
    """Why no float16 case: neither ITK's NIfTI, NRRD nor MetaImage writer (nor the formats) has half floats."""
    with pytest.raises(Exception, match="float16 is not supported"):
        sitk.GetImageFromArray(np.zeros((2, 2, 2), np.float16))


# --------------------------------------------------------------------------------------------- directions


def _mha(path, matrix):
    path.write_bytes(f"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 1 1 1\nTransformMatrix = "
                     f"{matrix}\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n".encode() + bytes(range(8)))
    return path


def _nrrd(path, directions):
    path.write_bytes(f"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\nspace "
                     f"directions: {directions}\nkinds: domain domain domain\nencoding: raw\nspace origin: (0,0,0)\n\n"
                     .encode() + bytes(range(8)))
    return path


@pytest.mark.parametrize(("make", "error"), [
    (lambda t: _mha(t / "shear.mha", "1 0 0 0.1 1 0 0 0 1"), "0.1"),
    (lambda t: _mha(t / "scaled.mha", "2 0 0 0 0.5 0 0 0 1"), "3"),  # det 1: passed the old check
    (lambda t: _nrrd(t / "shear.nrrd", "(1,0,0) (0.3,1,0) (0,0,1)"), "0.287"),
])
def test_sheared_or_scaled_directions_are_refused(tmp_path, make, error):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=rf"not orthonormal .*\|D\^T D - I\| reaches {re.escape(error)}.*resample "
                                         r"the image onto an orthonormal grid") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_direction_tolerance_accepts_float_error_and_refuses_a_small_shear():
    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    Geometry(direction=tuple(map(tuple, rotation + 1e-6)))  # text round-off, Slicer matrices
    with pytest.raises(ValueError, match="not orthonormal"):
        Geometry(direction=((1.0, 0.001, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


# --------------------------------------------------------------------------------------------- DICOM series


@pytest.fixture
def series(tmp_path, shared_data):
    """A copy of the 20-slice CT series (2 mm apart) and its files sorted by position along the normal."""
    source = shared_data / CT_SERIES
    folder = tmp_path / "series"
    shutil.copytree(source, folder)
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True)
                                                         .ImagePositionPatient[2]))
    return folder, files


def _edit(path, **values):
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_untouched_series_spacing_is_the_slice_position_step(series):
    folder, files = series
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    array, geometry = read_image(folder)
    assert array.shape == (20, 512, 512)
    assert geometry.spacing[2] == pytest.approx(z[1] - z[0]) and set(np.round(np.diff(z), 6)) == {2.0}
    assert geometry.origin[2] == pytest.approx(z[0])


def test_missing_slice_is_refused_naming_the_positions(series):
    folder, files = series
    files[7].unlink()
    with pytest.raises(ValueError, match=r"has missing slices: slice positions along the slice normal step by 2 mm "
                                         r"except -792\.5 -> -788\.5 mm \(4 mm, about 1 slice\(s\) missing\).*average "
                                         r"2\.111 mm.*add the missing files"):
        read_image(folder)


def test_several_gaps_are_all_named(series):
    folder, files = series
    for n in (3, 12, 13):
        files[n].unlink()
    with pytest.raises(ValueError, match=r"-800\.5 -> -796\.5 mm \(4 mm, about 1 slice.*; -782\.5 -> -776\.5 mm "
                                         r"\(6 mm, about 2 slice"):
        read_image(folder)


def test_exact_duplicate_is_read_once_with_a_warning(series, caplog):
    folder, files = series
    shutil.copy(files[5], folder / "sent-twice.dcm")
    with caplog.at_level(logging.WARNING):
        array, geometry = read_image(folder)
    assert array.shape == (20, 512, 512) and geometry.spacing[2] == pytest.approx(2.0)
    assert "1 exact duplicate slice(s) (same position, identical pixels)" in caplog.text


def test_two_images_at_one_position_are_refused(series):
    folder, files = series
    shutil.copy(files[5], folder / "other.dcm")
    position = pydicom.dcmread(files[6], stop_before_pixels=True).ImagePositionPatient
    _edit(folder / "other.dcm", ImagePositionPatient=position, SOPInstanceUID="1.2.826.0.1.3680043.2.1125.77.1")
    with pytest.raises(ValueError, match=rf"1 slice position\(s\) .*two files with different pixels: .*other\.dcm at "
                                         rf"{float(position[2]):g} mm.*own folder"):
        read_image(folder)


def test_uneven_spacing_is_refused_naming_the_steps(series):
    folder, files = series
    x, y, z = pydicom.dcmread(files[10], stop_before_pixels=True).ImagePositionPatient
    _edit(files[10], ImagePositionPatient=[x, y, float(z) + 0.7])  # pixel data kept
    with pytest.raises(ValueError, match=r"is unevenly spaced: .*step by 2 mm except -786\.5 -> -783\.8 mm "
                                         r"\(2\.7 mm\); -783\.8 -> -782\.5 mm \(1\.3 mm\).*Acquisition geometry "
                                         r"regularization"):
        read_image(folder)


def test_small_position_jitter_is_accepted(series):
    folder, files = series
    x, y, z = pydicom.dcmread(files[10], stop_before_pixels=True).ImagePositionPatient
    _edit(files[10], ImagePositionPatient=[x, y, float(z) + 0.005])  # 0.25 % of the step
    _, geometry = read_image(folder)
    assert geometry.spacing[2] == pytest.approx(2.0)


@pytest.mark.parametrize(("edit", "message"), [
    ({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, r"orientation \(1, 0, 0, 0, 0, -1\) vs \(1, 0, 0, 0, 1, 0\)"),
    ({"Rows": 256}, r"size 512 x 256 vs 512 x 512 pixels"),
    ({"PixelSpacing": [0.5, 0.5]}, r"pixel spacing \(0\.5, 0\.5\) vs \(0\.9765625, 0\.9765625\) mm"),
])
def test_files_of_another_orientation_size_or_pixel_spacing_are_refused(series, edit, message):
    folder, files = series
    _edit(files[9], **edit)
    with pytest.raises(ValueError, match=rf"not slices of one volume: {files[9].name} differs from .*{message}"):
        read_image(folder)


def test_file_without_a_position_is_refused(series):
    folder, files = series
    ds = pydicom.dcmread(files[4])
    del ds.ImagePositionPatient
    ds.save_as(files[4])
    with pytest.raises(ValueError, match=rf"{files[4].name} has no valid ImagePositionPatient"):
        read_image(folder)


@pytest.mark.parametrize("slope", ["0", "nan"])
def test_a_rescale_slope_that_gdcm_ignores_is_refused(series, slope):
    folder, files = series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: 'nan' is not a valid decimal string
        _edit(files[3], RescaleSlope=slope)
    with pytest.raises(ValueError, match=rf"1 file\(s\) have an invalid intensity rescale.*{files[3].name} "
                                         rf"\(RescaleSlope is '{slope}"):
        read_image(folder)


def test_an_unreadable_slice_is_named_with_the_gap(series):
    folder, files = series
    files[8].write_bytes(files[8].read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"missing slices: .*-790\.5 -> -786\.5 mm.*1 other file\(s\) in the folder "
                                         rf"are not part of the series \({files[8].name}\)"):
        read_image(folder)


def test_series_without_uids_is_read_with_a_warning(shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        array, geometry = read_image(shared_data / NO_UIDS)
    assert array.shape == (20, 512, 512) and geometry.spacing[2] == pytest.approx(2.0)
    assert "has no SeriesInstanceUID and 20 of 20 files without a SOPInstanceUID" in caplog.text
    assert "a DICOM SEG or SR cannot refer to it" in caplog.text


# --------------------------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model)
    d["input_domain"] = HIPPOCAMPUS_DOMAIN
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, ModelCard.from_dict(d))


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_volume_is_refused(tiny_checkpoint, value):
    segmenter = Segmenter(tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match=rf"input channel 'T1w' is constant \(all 1200 voxels are {value:g}\): there "
                                         r"is no image to segment"):
        segmenter.segment(np.full((10, 12, 10), value, np.float32), Geometry())


def test_describe_inputs_measures_sizes_spacings_and_percentiles():
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    rotated = Geometry((2.0, 1.0, 1.0), direction=((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)))
    domain = describe_inputs([(ramp, Geometry()), (ramp + 100, rotated)], ["T1w"])
    assert domain["cases"] == 2
    assert domain["extent_mm"] == [[10.0, 10.0], [10.0, 20.0], [10.0, 10.0]]  # i of case 2 runs along P
    assert domain["spacing_mm"] == [[1.0, 1.0], [1.0, 2.0], [1.0, 1.0]]
    assert domain["channels"] == [{"name": "T1w", "p01": [9.99, 109.99], "p99": [989.01, 1089.01]}]


def test_training_like_input_gets_no_warning_and_ct_or_huge_inputs_do(tiny_checkpoint, samples, shared_data):
    card = Segmenter(tiny_checkpoint, device="cpu").card
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    assert domain_warnings(card, image[None], geometry) == []
    huge = np.tile(image, (10, 10, 10))
    (size,) = domain_warnings(card, huge[None], geometry)
    assert re.search(r"size is far outside .*350 mm along L \(8\.14x the largest, 43 mm\).*--roi", size)
    ct, ct_geometry = read_image(shared_data / "btcv" / "imagesTr" / "btcv_00.nii.gz")
    messages = domain_warnings(card, ct[None], ct_geometry)
    assert len(messages) == 3
    assert "2.338 mm along L (2.34x the largest, 1 mm)" in messages[1]
    assert re.search(r"'T1w' \(MR\) has negative intensities: 1st percentile -125, but every training", messages[2])


def test_absolute_scale_channels_compare_intensities(tiny_checkpoint):
    card = Segmenter(tiny_checkpoint, device="cpu").card
    d = card.to_dict()
    d["inputs"][0] = {"name": "T1w", "modality": "CT", "normalization": {"kind": "ct", "window": [-100, 200],
                                                                          "mean": 50.0, "std": 40.0}}
    d["input_domain"]["channels"][0] |= {"p01": [-1000.0, -900.0], "p99": [200.0, 400.0]}
    ct_card = ModelCard.from_dict(d)
    volume = np.linspace(-1000, 300, 40 * 50 * 40, dtype=np.float32).reshape(40, 50, 40)
    assert domain_warnings(ct_card, volume[None], Geometry()) == []
    assert domain_warnings(ct_card, (volume * 4)[None], Geometry()) == []  # compared inside the window [-100, 200]
    (message,) = domain_warnings(ct_card, (volume + 1024)[None], Geometry())  # stored without its rescale to HU
    assert "no negative intensities: 1st percentile 37 clipped to the card's window -100 to 200 HU" in message
    none_card = ModelCard.from_dict(d | {"inputs": [d["inputs"][0] | {"normalization": {"kind": "none"}}]})
    (message,) = domain_warnings(none_card, (volume * 4)[None], Geometry())  # no window: compared as they are
    assert "1st percentile -3948, 99th percentile 1148" in message and "CT in HU" in message


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.update(cases=0), r"input_domain\.cases: expected a positive integer"),
    (lambda d: d.update(extent_mm=[[1.0, 2.0]]), r"input_domain\.extent_mm: expected 3 \[low, high\] pairs"),
    (lambda d: d["spacing_mm"][0].__setitem__(0, float("nan")), r"input_domain\.spacing_mm"),
    (lambda d: d["channels"][0].update(p01=[5.0, 1.0]), r"input_domain\.channels\[0\]\.p01"),
    (lambda d: d["channels"][0].update(name="T2w"), r"input_domain\.channels\[0\]\.name: expected 'T1w'"),
    (lambda d: d.update(channels=[]), r"input_domain\.channels: expected 1 entries"),
])
def test_card_input_domain_is_validated(tiny_model, change, field):
    d = card_dict(tiny_model)
    d["input_domain"] = json.loads(json.dumps(HIPPOCAMPUS_DOMAIN))
    change(d["input_domain"])
    with pytest.raises(ValueError, match=field):
        ModelCard.from_dict(d)


def test_warnings_reach_the_result_and_its_report(tiny_checkpoint, shared_data):
    ct, geometry = read_image(shared_data / "btcv" / "imagesTr" / "btcv_00.nii.gz")
    result = Segmenter(tiny_checkpoint, device="cpu").segment(ct, geometry, SegmentOptions(
        overlap=0.0, roi=(0, 16, 0, 16, 0, 16), measure=False))
    assert len(result.warnings) == 2  # spacing and negative intensities; the 16-voxel ROI is hippocampus-sized
    assert result.report()["warnings"] == result.warnings


# --------------------------------------------------------------------------------------------- the command line


def _bad_inputs(tmp_path, shared_data):
    """name -> (input path, message); every one must be refused by `medseg segment`."""
    cases = {}
    f32 = _with_non_finite(np.float32)
    cases["NaN in a float NIfTI"] = (_nifti(tmp_path, "nan.nii.gz", f32), "3 NaN and 2 infinite")
    cases["NaN scale slope"] = (_nifti(tmp_path, "slope.nii", np.ones((4, 5, 6), np.int16), float("nan"), 0.0),
                                "not finite")
    cases["sheared direction"] = (_mha(tmp_path / "shear.mha", "1 0 0 0.1 1 0 0 0 1"), "not orthonormal")
    zeros = tmp_path / "zeros.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 24, 22), np.int16)), str(zeros))
    cases["all-zero volume"] = (zeros, "is constant")
    folder = tmp_path / "gap"
    shutil.copytree(shared_data / CT_SERIES, folder)
    sorted_files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    sorted_files[7].unlink()
    cases["DICOM series with a missing slice"] = (folder, "missing slices")
    return cases


def test_cli_refuses_each_class_with_exit_code_2_and_writes_nothing(tmp_path, shared_data, tiny_checkpoint, capsys):
    for name, (path, message) in _bad_inputs(tmp_path, shared_data).items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        out.mkdir()
        code = main(["segment", str(path), "--model", str(tiny_checkpoint), "--output", str(out / "s.seg.nrrd"),
                     "--report", str(out / "r.json"), "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert "error:" in err and "Traceback" not in err and message in err, f"{name}: {err}"
        assert list(out.iterdir()) == [], name


def test_cli_prints_warnings_and_reports_them(tmp_path, shared_data, tiny_checkpoint):
    """The UID-less CT series to an MR model: read with a warning, segmented with one, both on stderr."""
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "medseg", "segment", str(shared_data / NO_UIDS), "--model", str(tiny_checkpoint),
           "--output", str(tmp_path / "l.nii.gz"), "--report", str(report), "--device", "cpu", "--overlap", "0",
           "--no-progress", "--threads", "1", "--roi", "0", "32", "0", "32", "0", "20"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "WARNING the DICOM series in" in result.stderr and "no SeriesInstanceUID" in result.stderr
    assert "WARNING input channel 'T1w' (MR) has negative intensities" in result.stderr
    warnings = json.loads(report.read_text())["warnings"]  # read-time and run-time warnings, each once
    assert any("negative intensities (air at -1000 as in a CT in HU)" in w for w in warnings), warnings
    assert any("no SeriesInstanceUID" in w for w in warnings), warnings
    assert len(warnings) == len(set(warnings))
