"""Voxel orientation: codes and reorientation as ITK's DICOMOrient, the card's field, and inference that gives the
same labels in physical space for every voxel order of a real case (the bundled model, its card given the
orientation it was trained in), with every output on the input's own grid."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from card_support import card_dict
from orientation_support import (
    TRAINED_ORIENTATION,
    VOXEL_ORDERS,
    back_from,
    box_in,
    oriented_model,
    stored_as,
    update_card_module,
)

import medseg.inference as inference
from medseg.card import ModelCard
from medseg.catalog import resources_dir
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.metrics import score_label
from medseg.orientation import check_orientation_code, orientation_code, reorientation

CAM = "posterior hippocampus"
# A few voxel orders for the slower checks: a pure flip, a transpose, and transposes with flips.
SOME_ORDERS = [((0, 1, 2), (True, False, True)), ((2, 1, 0), (False, False, False)),
               ((1, 2, 0), (True, True, False)), ((2, 0, 1), (False, True, True))]


def _rotation(degrees: float, axis) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


@pytest.fixture(scope="module")
def case():
    samples = resources_dir() / "Samples"
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    truth, _ = read_image(samples / "hippocampus_001_label.nii.gz")
    return image, geometry, truth.astype(np.uint8)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return oriented_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def segmenter(model_path):
    return Segmenter(model_path, device="cpu")


# ---------------------------------------------------------------------------------------------- codes


def test_codes_are_itks_for_every_axis_order_and_oblique_directions():
    rng = np.random.default_rng(0)
    eye = Geometry()
    for axes, flips in VOXEL_ORDERS:
        _, geometry = stored_as(np.zeros((2, 3, 4)), eye, axes, flips)
        d = np.asarray(geometry.direction)
        for rotation in (np.eye(3), _rotation(rng.uniform(-40, 40), rng.normal(size=3))):
            oblique = rotation @ d
            expected = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(oblique.ravel()))
            assert orientation_code(oblique) == expected
    assert orientation_code(np.eye(3)) == "LPS" and orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"


@pytest.mark.parametrize("code", ["RAS", "LPS", "PIR", "SAL", "ILP"])
def test_valid_codes_pass(code):
    assert check_orientation_code(code) == code


@pytest.mark.parametrize("code", ["RAX", "RRS", "ras", "RA", "RASL", 3, None, "LPI "])
def test_invalid_codes_are_refused_by_name(code):
    with pytest.raises(ValueError, match=r"^target: expected three upper-case letters, one from each of R/L"):
        check_orientation_code(code, "target")


def test_reorientation_is_itks_dicom_orient_for_all_48_codes_and_inverts_exactly(case):
    image, geometry, _ = case
    source = geometry.to_sitk(image)
    codes = set()
    for axes, flips in VOXEL_ORDERS:
        _, stored = stored_as(image, geometry, axes, flips)
        code = orientation_code(stored.direction)
        codes.add(code)
        expected = sitk.DICOMOrient(source, code)
        r = reorientation(geometry, image.shape, code)
        out = r.apply(image)
        assert np.array_equal(out, sitk.GetArrayFromImage(expected)), code
        np.testing.assert_allclose(r.geometry.origin, expected.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(r.geometry.spacing, expected.GetSpacing())
        np.testing.assert_allclose(np.ravel(r.geometry.direction), expected.GetDirection(), atol=1e-12)
        assert r.shape((2, *image.shape)) == (2, *out.shape)
        assert np.array_equal(r.invert(out), image) and np.array_equal(r.invert(r.apply(image[None]))[0], image)
    assert len(codes) == 48


def test_the_test_helper_builds_what_dicom_orient_builds(case):
    """`stored_as` (used to build the inputs below) agrees with ITK: same voxels, same geometry."""
    image, geometry, _ = case
    for axes, flips in VOXEL_ORDERS[::5]:
        array, stored = stored_as(image, geometry, axes, flips)
        expected = sitk.DICOMOrient(geometry.to_sitk(image), orientation_code(stored.direction))
        assert np.array_equal(array, sitk.GetArrayFromImage(expected))
        np.testing.assert_allclose(stored.origin, expected.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(np.ravel(stored.direction), expected.GetDirection(), atol=1e-12)


# ---------------------------------------------------------------------------------------------- the card


def test_card_records_and_validates_the_orientation(tiny_model):
    d = card_dict(tiny_model)
    assert ModelCard.from_dict(d).orientation is None  # older cards: as stored
    card = ModelCard.from_dict({**d, "orientation": "PIR"})
    assert card.orientation == "PIR" and ModelCard.from_json(card.to_json()).orientation == "PIR"
    for bad in ("PIX", "RRS", "ras", ["R", "A", "S"]):
        with pytest.raises(ValueError, match=r"orientation: expected three upper-case letters") as info:
            ModelCard.from_dict({**d, "orientation": bad})
        assert repr(bad) in str(info.value)


def test_bundled_training_data_orientation_is_what_the_cards_get(shared_data):
    """Every training case of each bundled model's data set is stored in one orientation (checked on all)."""
    for name, folder in (("hippocampus-unet3d", "hippocampus"), ("left-atrium-vnet", "left_atrium")):
        codes = set()
        for path in sorted((shared_data / folder / "imagesTr").glob("*.nii*")):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            codes.add(orientation_code(np.reshape(reader.GetDirection(), (3, 3))))
        assert codes == {TRAINED_ORIENTATION[name]}, f"{folder}: {codes}"


# ---------------------------------------------------------------------------------------------- scripts/update_card.py


def test_update_card_changes_only_the_card(tmp_path):
    module = update_card_module()
    bundled = resources_dir() / "Models" / "hippocampus-unet3d.safetensors"
    path = tmp_path / "model.safetensors"
    path.write_bytes(bundled.read_bytes())
    card = module.update_card(path, {"orientation": "RAS", "training.license": "CC-BY-SA 4.0"})
    assert card.orientation == "RAS" and card.training["license"] == "CC-BY-SA 4.0"

    def tensors(p):
        data = p.read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        return data[8 + size:], {k: v for k, v in header.items() if k != "__metadata__"}

    assert tensors(path) == tensors(bundled)  # the same bytes at the same offsets
    assert Segmenter(path, device="cpu").card.orientation == "RAS"
    before = path.read_bytes()
    with pytest.raises(ValueError, match="orientation: expected three"):
        module.update_card(path, {"orientation": "RAQ"})
    assert module.main([str(path), "--set", "orientation=RAS"]) == 1  # not JSON: a message, no change
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


# ---------------------------------------------------------------------------------------------- inference


def test_all_48_voxel_orders_give_identical_labels_in_physical_space(case, segmenter):
    image, geometry, truth = case
    reference = segmenter.segment(image, geometry)
    assert reference.info["orientation"] == {"input": "RAS", "model": "RAS", "reoriented": False}
    for label in (1, 2):
        assert score_label(reference.labels == label, truth == label, geometry).dice > 0.8
    volumes = [(m.voxel_count, m.volume_ml) for m in reference.measurements]
    seen = set()
    for axes, flips in VOXEL_ORDERS:
        array, stored = stored_as(image, geometry, axes, flips)
        result = segmenter.segment(array, stored)
        seen.add(result.info["orientation"]["input"])
        assert result.labels.shape == array.shape and result.geometry == stored
        assert np.array_equal(back_from(result.labels, axes, flips), reference.labels), (axes, flips)
        assert [(m.voxel_count, m.volume_ml) for m in result.measurements] == volumes
        for m, r in zip(result.measurements, reference.measurements, strict=True):
            np.testing.assert_allclose(m.centroid_lps, r.centroid_lps, atol=1e-6)
    assert len(seen) == 48


def test_without_an_orientation_the_array_goes_as_stored_with_one_warning(case, segmenter, monkeypatch, caplog,
                                                                          tmp_path):
    """The behaviour for older cards, and the reason for the field: another voxel order changes the labels."""
    image, geometry, _ = case
    monkeypatch.setattr(inference, "_WARNED_NO_ORIENTATION", set())
    older = tmp_path / "older.safetensors"  # the bundled model as it was before its card recorded an orientation
    shutil.copyfile(resources_dir() / "Models" / "hippocampus-unet3d.safetensors", older)
    update_card_module().update_card(older, {"orientation": None})
    plain = Segmenter(older, device="cpu")
    assert plain.card.orientation is None
    with caplog.at_level(logging.WARNING, logger="medseg.inference"):
        as_stored = plain.segment(image, geometry)
        array, stored = stored_as(image, geometry, (2, 0, 1), (False, True, True))
        permuted = plain.segment(array, stored)
    warnings = [r for r in caplog.records if "does not record the voxel orientation" in r.getMessage()]
    assert len(warnings) == 1 and "update_card" in warnings[0].getMessage()
    assert permuted.info["orientation"]["reoriented"] is False
    assert np.array_equal(as_stored.labels, segmenter.segment(image, geometry).labels)  # RAS input: nothing to do
    assert not np.array_equal(back_from(permuted.labels, (2, 0, 1), (False, True, True)), as_stored.labels)


def test_an_oblique_input_goes_to_the_nearest_axis_aligned_orientation(case, segmenter):
    image, geometry, _ = case
    rotated = _rotation(20, (1, 2, 3)) @ np.asarray(geometry.direction)
    oblique = Geometry(geometry.spacing, geometry.origin, tuple(map(tuple, rotated)))
    assert orientation_code(oblique.direction) == "RAS"
    reference = segmenter.segment(image, oblique)
    assert reference.info["orientation"]["reoriented"] is False
    for axes, flips in SOME_ORDERS:
        array, stored = stored_as(image, oblique, axes, flips)
        code = orientation_code(stored.direction)
        to_model = reorientation(stored, array.shape, "RAS")
        itk = sitk.DICOMOrient(stored.to_sitk(array), "RAS")  # ITK's nearest axis-aligned orientation
        assert np.array_equal(to_model.apply(array), sitk.GetArrayFromImage(itk)) and np.array_equal(
            to_model.apply(array), image)
        np.testing.assert_allclose(np.ravel(to_model.geometry.direction), itk.GetDirection(), atol=1e-12)
        np.testing.assert_allclose(to_model.geometry.origin, oblique.origin, atol=1e-9)
        result = segmenter.segment(array, stored)
        assert result.info["orientation"] == {"input": code, "model": "RAS", "reoriented": code != "RAS"}
        assert result.labels.shape == array.shape
        assert np.array_equal(back_from(result.labels, axes, flips), reference.labels), code


def test_roi_probabilities_uncertainty_and_grad_cam_stay_on_the_input_grid(case, segmenter):
    image, geometry, _ = case
    roi = (4, 30, 8, 44, 3, 31)  # i0 i1 j0 j1 k0 k1 of the stored (RAS) grid, around both labels
    options = SegmentOptions(roi=roi, probabilities=True, uncertainty=True, tta=True, activation_classes=(CAM,))
    reference = segmenter.segment(image, geometry, options)
    inside = np.zeros(image.shape, bool)
    inside[roi[4]:roi[5], roi[2]:roi[3], roi[0]:roi[1]] = True
    assert set(np.unique(reference.labels[inside])) == {0, 1, 2} and not reference.labels[~inside].any()
    for axes, flips in SOME_ORDERS:
        array, stored = stored_as(image, geometry, axes, flips)
        box = box_in(roi, image.shape, axes, flips)
        result = segmenter.segment(array, stored, SegmentOptions(**{**options.__dict__, "roi": box}))
        assert result.info["orientation"]["reoriented"] and result.info["roi_ijk"] == list(box)
        back = lambda a, axes=axes, flips=flips: back_from(a, axes, flips)  # noqa: E731
        assert result.probabilities.shape == (3, *array.shape) and result.entropy.shape == array.shape
        assert np.array_equal(back(result.labels), reference.labels)
        np.testing.assert_allclose(back(result.probabilities), reference.probabilities, atol=1e-6)
        np.testing.assert_allclose(back(result.entropy), reference.entropy, atol=1e-6)
        np.testing.assert_allclose(back(result.tta_variance), reference.tta_variance, atol=1e-6)
        np.testing.assert_allclose(back(result.activations[CAM]), reference.activations[CAM], atol=1e-5)
        assert back(result.activations[CAM])[inside].max() == pytest.approx(1.0)


def test_resampling_to_the_model_spacing_uses_the_reoriented_spacing(case, segmenter):
    """Anisotropic voxels (0.8 x 1.0 x 1.4 mm) resampled to the card's 1 mm: the same grid from every order."""
    image, geometry, _ = case
    anisotropic = Geometry((0.8, 1.0, 1.4), geometry.origin, geometry.direction)
    reference = segmenter.segment(image, anisotropic, SegmentOptions(probabilities=True))
    assert reference.info["network_grid_kji"] == [49, 51, 28]  # (z, y, x) at 1 mm
    for axes, flips in SOME_ORDERS:
        array, stored = stored_as(image, anisotropic, axes, flips)
        result = segmenter.segment(array, stored, SegmentOptions(probabilities=True))
        assert result.info["network_grid_kji"] == [49, 51, 28]
        assert np.array_equal(back_from(result.labels, axes, flips), reference.labels)
        np.testing.assert_allclose(back_from(result.probabilities, axes, flips), reference.probabilities, atol=1e-6)


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture
def mixed_data(tmp_path):
    """A Decathlon folder of the two bundled sample cases: 'a' and 'c' stored as given (RAS), 'b' stored as PIR."""
    samples = resources_dir() / "Samples"
    root = tmp_path / "mixed"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for name, sample, code in (("a", "hippocampus_001", None), ("b", "hippocampus_003", "PIR"),
                               ("c", "hippocampus_003", None)):
        for sub, suffix in (("imagesTr", "T1w"), ("labelsTr", "label")):
            image = sitk.ReadImage(str(samples / f"{sample}_{suffix}.nii.gz"))
            sitk.WriteImage(sitk.DICOMOrient(image, code) if code else image, str(root / sub / f"{name}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "name": "mixed orientations", "modality": {"0": "MRI T1w"}, "license": "CC-BY-SA 4.0",
        "labels": {"0": "background", "1": "anterior hippocampus", "2": "posterior hippocampus"}}))
    return root


def test_training_brings_every_case_to_the_majority_orientation(mixed_data):
    from medseg.train.data import dataset_orientation, read_dataset, read_raw

    info = read_dataset(mixed_data)
    assert dataset_orientation(info) == "RAS"  # 2 of 3 cases
    assert dataset_orientation(info, ["b", "c"]) == "PIR"  # a tie: the first case's
    original = [sitk.GetArrayFromImage(sitk.ReadImage(str(mixed_data / sub / "c.nii.gz")))
                for sub in ("imagesTr", "labelsTr")]
    z, y, x = original[0].shape
    assert read_raw(info, ["b"])[0][0].shape[1:] == (x, z, y)  # PIR on disk: (Z, Y, X) run along R, I, P
    (image, label, spacing), = read_raw(info, ["b"], "RAS")
    assert np.array_equal(image[0], original[0]) and np.array_equal(label, original[1]) and spacing == (1.0, 1.0, 1.0)


def test_medseg_train_records_the_orientation_in_its_card(mixed_data, tmp_path):
    from medseg.checkpoint import read_card
    from medseg.train import AugmentConfig, TrainConfig, train

    config = TrainConfig(data=mixed_data, out=tmp_path / "run", name="mixed", width=0.0625, depth=3,
                         patch=(16, 32, 16), epochs=1, steps_per_epoch=1, batch=1, val_fraction=0.34,
                         val_include=("b",), augment=AugmentConfig(enabled=False), num_threads=1)
    result = train(config)
    assert read_card(result.best).orientation == "RAS" and read_card(result.last).orientation == "RAS"
