"""medseg import-nnunet on results folders laid out as nnU-Net v2 writes them (built here from our own networks),
the imported models run through MedSeg's inference, and the nnU-Net window layout against a reference of
nnU-Net's predictor written from its source (scipy's Gaussian filter, its step and padding rules)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_folder import dataset_json, plans_json, write_results_folder

from medseg.checkpoint import load_checkpoint, read_card
from medseg.cli import main
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.nnunet import import_nnunet, network_state
from medseg.sliding_window import nnunet_window_starts


def _image(shape=(14, 30, 27), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    blob = np.exp(-((z * 1.5) ** 2 + y**2 + (x - 0.2) ** 2) * 3)
    return (100 + 400 * blob + rng.normal(0, 20, shape)).astype(np.float32)


def _geometry(spacing=(1.0, 1.0, 2.0)) -> Geometry:
    return Geometry(spacing, (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


# -- a reference of nnU-Net's predictor (nnunetv2 2.8.1, predict_from_raw_data / sliding_window_prediction) ------
def _reference_gaussian(patch) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(patch)
    tmp[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(tmp, [p / 8 for p in patch], 0, mode="constant", cval=0)
    g = torch.from_numpy(g / (np.max(g) / 10)).half()
    g[g == 0] = torch.min(g[g != 0])
    return g.float()


def _reference_steps(size, tile, step=0.5):
    n = int(np.ceil((size - tile) / (tile * step))) + 1
    actual = (size - tile) / (n - 1) if n > 1 else 99999999999
    return [int(np.round(actual * i)) for i in range(n)]


def _zscore(image: np.ndarray) -> np.ndarray:
    return (image - image.mean()) / max(image.std(), 1e-8)


def _reference_logits(network, normalized: np.ndarray, patch, mirror_axes) -> torch.Tensor:
    """nnU-Net's steps for one normalised case at its network spacing (no non-zero crop needed here): pad to the
    patch (centred zeros), windows, Gaussian, mirroring, mean over passes."""
    data = torch.from_numpy(normalized[None].astype(np.float32))
    shape = data.shape[1:]
    new = [max(p, s) for p, s in zip(patch, shape, strict=True)]
    below = [(n - s) // 2 for n, s in zip(new, shape, strict=True)]
    pads = []
    for b, n, s in reversed(list(zip(below, new, shape, strict=True))):
        pads += [b, n - s - b]
    data = torch.nn.functional.pad(data, pads)
    gaussian = _reference_gaussian(patch)
    logits = torch.zeros((network.num_classes, *data.shape[1:]))
    weights = torch.zeros(data.shape[1:])
    steps = [_reference_steps(s, p) for s, p in zip(data.shape[1:], patch, strict=True)]
    axes = [m + 2 for m in mirror_axes]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    with torch.no_grad():
        for start in itertools.product(*steps):
            sl = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            x = data[(slice(None), *sl)][None]
            pred = network(x)
            for c in combos:
                pred += torch.flip(network(torch.flip(x, c)), c)
            pred = pred / (len(combos) + 1)
            logits[(slice(None), *sl)] += pred[0] * gaussian
            weights[sl] += gaussian
    logits /= weights
    return logits[(slice(None), *(slice(b, b + s) for b, s in zip(below, shape, strict=True)))]


def test_window_starts_follow_nnunet():
    for size, tile in [(40, 40), (41, 40), (110, 64), (200, 96), (57, 16), (300, 128)]:
        assert nnunet_window_starts(size, tile, 0.5) == _reference_steps(size, tile)


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_import_then_inference_matches_nnunet_reference(tmp_path, kind):
    pytest.importorskip("scipy", reason="scipy's gaussian_filter is the reference of nnU-Net's Gaussian")
    plans = plans_json(kind, patch=(8, 16, 16), spacing=(2.0, 1.0, 1.0))
    folder, (source,) = write_results_folder(tmp_path, kind, plans=plans)
    out = tmp_path / "model.safetensors"
    done = import_nnunet(folder, out)
    card = read_card(out)
    assert done.folds == ("fold_0",) and card.ensemble is None
    assert card.architecture == {"plain": "plain_conv_unet", "resenc": "residual_encoder_unet"}[kind]
    assert card.patch_size == (8, 16, 16) and card.spacing == (1.0, 1.0, 2.0)
    assert card.inference == {"windows": "nnunet", "transpose": [0, 1, 2], "crop_nonzero": True,
                              "mirror_axes": [0, 1, 2]}
    assert [label.name for label in card.labels] == ["background", "anterior", "posterior"]
    assert card.inputs[0].normalization.kind == "zscore" and card.inputs[0].normalization.percentiles is None
    nn_info = card.training["nnunet"]
    assert nn_info["trainer"] == "nnUNetTrainer" and nn_info["folds"] == ["fold_0"] and nn_info["epochs"] == [12]
    assert set(nn_info["sha256"]) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth"}
    image = _image()
    for tta in (False, True):
        result = Segmenter(out, device="cpu").segment(
            image, _geometry(), SegmentOptions(precision="fp32", probabilities=True, tta=tta, measure=False))
        logits = _reference_logits(source, _zscore(image), (8, 16, 16), (0, 1, 2) if tta else ())
        expected = logits.softmax(0).numpy()
        np.testing.assert_allclose(result.probabilities, expected, atol=2e-5)
        assert np.array_equal(result.labels, expected.argmax(0))
        assert len(np.unique(result.labels)) > 1  # not a trivial prediction


def test_weights_are_deduplicated_and_load_strictly(tmp_path):
    folder, (source,) = write_results_folder(tmp_path)
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    weights = ckpt["network_weights"]
    state = network_state(weights, 3)
    assert len(weights) > 2 * len(state)  # all_modules, decoder.encoder and deep-supervision duplicates
    assert set(state) == set(source.state_dict())
    assert not any(".all_modules." in k or k.startswith(("decoder.encoder.", "decoder.seg_layers.")) for k in state)
    changed = dict(weights)
    first = next(k for k in weights if ".all_modules.0." in k)
    changed[first] = weights[first] + 1  # a "duplicate" that differs is kept, so a strict load names it
    assert first in network_state(changed, 3)


def test_folds_become_one_checkpoint_whose_logits_are_averaged(tmp_path):
    folder, models = write_results_folder(tmp_path, folds=(0, 1, 2), seeds=(1, 2, 3))
    out = tmp_path / "ensemble.safetensors"
    done = import_nnunet(folder, out, folds=[0, 2])
    assert done.folds == ("fold_0", "fold_2")
    loaded = load_checkpoint(out)
    assert loaded.card.ensemble == ("fold_0", "fold_2")
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        expected = (models[0](x) + models[2](x)) / 2
        torch.testing.assert_close(loaded.model(x), expected, rtol=1e-5, atol=1e-5)
    assert import_nnunet(folder, tmp_path / "all3.safetensors").folds == ("fold_0", "fold_1", "fold_2")


def test_medseg_extras_work_on_an_imported_ensemble(tmp_path, capsys):
    """Uncertainty (TTA variance over nnU-Net's mirror axes), Grad-CAM, measurements and medseg info."""
    folder, _ = write_results_folder(tmp_path, folds=(0, 1), seeds=(4, 5), mirror=(1, 2))
    out = tmp_path / "ensemble.safetensors"
    import_nnunet(folder, out)
    result = Segmenter(out, device="cpu").segment(
        _image(), _geometry(), SegmentOptions(precision="fp32", tta=True, uncertainty=True,
                                              activation_classes=("anterior",)))
    assert result.info["passes"] == 4  # no flip, y, x, y+x: the checkpoint's inference_allowed_mirroring_axes
    assert result.entropy.shape == result.labels.shape and result.tta_variance.max() > 0
    cam = result.activations["anterior"]
    assert cam.shape == result.labels.shape and 0 <= cam.min() and cam.max() <= 1 and cam.max() > 0
    assert {m.name for m in result.measurements} == {"anterior", "posterior"}
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble: mean logits of fold_0, fold_1" in text and '"windows": "nnunet"' in text


def test_medseg_segment_runs_an_imported_model_as_a_user_would(tmp_path, capsys):
    folder, _ = write_results_folder(tmp_path, "resenc")
    model = tmp_path / "imported.safetensors"
    assert main(["import-nnunet", str(folder), "--folds", "0", "--checkpoint", "final", "--output", str(model)]) == 0
    assert "residual_encoder_unet" in capsys.readouterr().out
    image = sitk.GetImageFromArray(_image())
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "case.nii.gz"))
    labels = tmp_path / "labels.nii.gz"
    code = main(["segment", str(tmp_path / "case.nii.gz"), "--model", str(model), "--output", str(labels),
                 "--device", "cpu", "--precision", "fp32", "--report", str(tmp_path / "report.json")])
    assert code == 0
    result = sitk.ReadImage(str(labels))
    assert result.GetSize() == image.GetSize() and result.GetSpacing() == image.GetSpacing()
    report = json.loads((tmp_path / "report.json").read_text())
    assert {entry["name"] for entry in report["labels"]} >= {"anterior", "posterior"}


def test_transposed_plans_and_ct_normalisation(tmp_path):
    plans = plans_json(patch=(16, 16, 8), spacing=(1.0, 1.0, 2.0), transpose=(1, 2, 0), scheme="CTNormalization")
    folder, (source,) = write_results_folder(tmp_path, plans=plans, dataset=dataset_json(channel="CT"))
    out = tmp_path / "ct.safetensors"
    card = import_nnunet(folder, out).card
    norm = card.inputs[0].normalization
    assert card.inputs[0].modality == "CT"
    assert (norm.kind, norm.window, norm.mean, norm.std) == ("ct", (-100.0, 400.0), 80.5, 120.25)
    assert card.inference["transpose"] == [1, 2, 0] and card.spacing == (2.0, 1.0, 1.0)
    image = _image((14, 30, 27)) * 2 - 300  # stored (z, y, x); nnU-Net runs it as (y, x, z)
    result = Segmenter(out, device="cpu").segment(image, _geometry(), SegmentOptions(precision="fp32",
                                                                                     probabilities=True))
    data = ((np.clip(image, -100.0, 400.0) - 80.5) / 120.25).transpose(1, 2, 0)  # transpose_forward
    logits = _reference_logits(source, data, (16, 16, 8), ())
    expected = logits.softmax(0).numpy().transpose(0, 3, 1, 2)  # transpose_backward
    np.testing.assert_allclose(result.probabilities, expected, atol=2e-5)


def test_crop_to_nonzero_and_background_outside(tmp_path):
    folder, _ = write_results_folder(tmp_path)
    out = tmp_path / "m.safetensors"
    import_nnunet(folder, out)
    image = np.zeros((20, 40, 36), dtype=np.float32)
    image[3:17, 5:35, 4:31] = _image()
    full = Segmenter(out, device="cpu").segment(image, _geometry(), SegmentOptions(precision="fp32",
                                                                                  probabilities=True))
    inner = Segmenter(out, device="cpu").segment(image[3:17, 5:35, 4:31], _geometry(),
                                                 SegmentOptions(precision="fp32"))
    assert np.array_equal(full.labels[3:17, 5:35, 4:31], inner.labels)  # the same windows on the same voxels
    outside = np.ones(image.shape, bool)
    outside[3:17, 5:35, 4:31] = False
    assert not full.labels[outside].any() and np.allclose(full.probabilities[0][outside], 1.0)
    assert math.isclose(float(full.probabilities.sum(0).mean()), 1.0, rel_tol=1e-5)


def test_mask_normalisation_as_nnunet():
    """nnU-Net's use_mask_for_norm: z-score statistics inside the non-zero mask (holes filled as scipy's
    binary_fill_holes, nnU-Net's create_nonzero_mask), zero outside."""
    scipy_ndimage = pytest.importorskip("scipy.ndimage", reason="scipy's binary_fill_holes is nnU-Net's mask")
    from medseg.card import Normalization
    from medseg.preprocess import nonzero_mask, normalize

    rng = np.random.default_rng(3)
    image = np.where(rng.random((12, 20, 18)) < 0.6, rng.normal(300, 50, (12, 20, 18)), 0).astype(np.float32)
    image[:, :3] = 0
    image[4:8, 8:12, 7:11] = 200
    image[5:7, 9:11, 8:10] = 0  # a closed cavity: inside the mask
    mask = nonzero_mask(image[None])
    assert np.array_equal(mask, scipy_ndimage.binary_fill_holes(image != 0))
    assert mask[6, 10, 9] and not mask[:, :3].any()
    out = normalize(image[None], [Normalization("zscore", None)], [True])[0]
    inside = image[mask]
    np.testing.assert_allclose(out[mask], (inside - inside.mean()) / inside.std(), rtol=1e-4, atol=1e-5)
    assert not out[~mask].any()
