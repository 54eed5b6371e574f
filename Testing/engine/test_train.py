"""Training: a tiny network on a few real hippocampus cases, the losses, the augmentation, the data checks."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.card import Normalization
from medseg.checkpoint import load_checkpoint, read_card
from medseg.domain import describe_inputs
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.train import AugmentConfig, TrainConfig, add_train_parser, learning_rate, train
from medseg.train.augment import PatchSampler, sample_grid, warp
from medseg.train.cli import config_from_args
from medseg.train.data import Case, load_cases, make_split, read_dataset, read_raw, read_split, resample_raw
from medseg.train.losses import (
    boundary_weight_map,
    ce_dice_loss,
    deep_supervision_weights,
    soft_dice_loss,
    supervised_loss,
)
from medseg.train.validate import predict_volume

CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_008",
         "hippocampus_011"]
NO_AUGMENT = AugmentConfig(enabled=False)


@pytest.fixture(scope="module")
def mini_data(shared_data, tmp_path_factory):
    """Six real hippocampus cases in a Decathlon folder of their own (links, not copies)."""
    src = shared_data / "hippocampus"
    root = tmp_path_factory.mktemp("hippocampus")
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir()
        for case in CASES:
            (root / sub / f"{case}.nii.gz").symlink_to(src / sub / f"{case}.nii.gz")
    shutil.copy(src / "dataset.json", root / "dataset.json")
    return root


def _config(data, out, **changes) -> TrainConfig:
    base = TrainConfig(data=data, out=out, name="tiny-hippocampus", width=0.125, depth=3, patch=(24, 32, 24),
                       epochs=3, steps_per_epoch=6, batch=2, lr=3e-3, val_every=1, fg_fraction=1.0,
                       val_fraction=0.34, val_include=("hippocampus_001", "hippocampus_003"), augment=NO_AUGMENT,
                       num_threads=1)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def tiny_run(mini_data, tmp_path_factory):
    torch.manual_seed(0)
    return train(_config(mini_data, tmp_path_factory.mktemp("run") / "tiny"))


def test_a_tiny_model_trains_and_its_loss_falls(tiny_run):
    losses = [row["train_loss"] for row in tiny_run.state.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0] * 0.9, losses
    assert 0.0 <= tiny_run.state.best_dice <= 1.0
    for name in ("best.safetensors", "last.safetensors", "last_state.safetensors", "last_state.json", "log.csv",
                 "curves.png", "config.json", "split.json"):
        assert (tiny_run.run / name).is_file(), name
    assert (tiny_run.run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tiny_run.run / "log.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,val_dice_anterior hippocampus,val_dice_posterior hippocampus")


def test_curves_without_matplotlib_and_the_progress_line(tiny_run, tmp_path, monkeypatch):
    from medseg.train import report
    from medseg.train.cli import ProgressPrinter
    from medseg.train.loop import Progress

    def no_matplotlib(*args):
        raise ImportError("no matplotlib")

    monkeypatch.setattr(report, "_plot_matplotlib", no_matplotlib)
    report.plot_curves(tmp_path / "c.png", tiny_run.state.history, ["anterior hippocampus", "posterior hippocampus"])
    png = (tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 500
    stream = io.StringIO()
    ProgressPrinter(stream)(Progress(2, 10, 5, 5, 0.5, 1e-3, 0.4, 65.0, 3725.0))
    assert stream.getvalue() == "epoch 2/10 step 5/5 loss 0.5000 lr 1.00e-03 0.40 s/step elapsed 0:01:05 ETA 1:02:05\n"


def test_the_saved_card_is_complete_and_loads(tiny_run):
    loaded = load_checkpoint(tiny_run.best)
    card = loaded.card
    assert card.name == "tiny-hippocampus" and card.architecture == "unet"
    assert card.architecture_args["width"] == 0.125 and card.architecture_args["depth"] == 3
    assert [(c.name, c.modality, c.normalization) for c in card.inputs] == [
        ("T1w", "MR", Normalization("zscore", (0.5, 99.5)))]
    assert [label.name for label in card.labels] == ["background", "anterior hippocampus", "posterior hippocampus"]
    assert len({label.color for label in card.labels}) == 3
    assert card.spacing == (1.0, 1.0, 1.0) and card.patch_size == (24, 32, 24)
    split = json.loads((tiny_run.run / "split.json").read_text())
    info = read_dataset(json.loads((tiny_run.run / "config.json").read_text())["data"])
    domain = describe_inputs([info.cases[name][0] for name in split["train"]], ["T1w"])
    assert card.input_domain == domain and domain["cases"] == 4  # the training cases, as read from disk
    t = card.training
    assert t["dataset"] == "MSD Task04 Hippocampus" and t["license"].startswith("CC-BY-SA")
    assert t["split"] == {"file": "split.json", "train_cases": 4, "validation_cases": 2, "seed": 0,
                          "validation_include": ["hippocampus_001", "hippocampus_003"]}
    assert t["epochs"] >= 1 and t["wall_time_s"] > 0 and t["hardware"]["cpu"] and t["hardware"]["torch_threads"]
    assert t["loss"]["name"] == "ce_dice" and t["optimizer"]["name"] == "adam" and t["source"]
    m = card.metrics
    assert set(m["dice"]) == set(m["iou"]) == {"anterior hippocampus", "posterior hippocampus"}
    assert m["mean_dice"] == pytest.approx(np.mean(list(m["dice"].values())))
    assert m["epoch"] == m["best_epoch"] == tiny_run.state.best_epoch
    assert read_card(tiny_run.last).training["epochs"] == 3


def test_validation_predicts_as_inference_does(tiny_run, mini_data):
    """The scores that pick the best epoch are those of the engine: same windows, same blending, same labels."""
    loaded = load_checkpoint(tiny_run.best)
    info = read_dataset(mini_data)
    case = load_cases(info, ["hippocampus_001"], [c.normalization for c in loaded.card.inputs])[0]
    assert any(s > p for s, p in zip(case.image.shape[1:], loaded.card.patch_size, strict=True))  # several windows
    labels = predict_volume(loaded.model.eval(), case.image, torch.device("cpu"), loaded.card.patch_size)
    raw, geometry = read_image(mini_data / "imagesTr" / "hippocampus_001.nii.gz")
    engine = Segmenter(loaded, device="cpu").segment(raw, geometry, SegmentOptions(precision="fp32", measure=False))
    assert (labels.numpy() == engine.labels).mean() > 0.999


def test_the_split_file_exists_and_never_overlaps_training(tiny_run):
    split = json.loads((tiny_run.run / "split.json").read_text())
    assert {"hippocampus_001", "hippocampus_003"} <= set(split["validation"])
    assert not set(split["train"]) & set(split["validation"])
    assert sorted(split["train"] + split["validation"]) == CASES
    assert split["train_cases"] == 4 and split["validation_cases"] == 2


def test_resume_continues_from_the_saved_epoch(tiny_run, mini_data, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run.run, run)
    with pytest.raises(ValueError, match="--resume"):
        train(_config(mini_data, run))
    resumed = train(_config(mini_data, run, epochs=4, resume=True))
    assert [row["epoch"] for row in resumed.state.history] == [1, 2, 3, 4]
    assert resumed.state.history[:3] == tiny_run.state.history
    training = read_card(resumed.last).training
    assert training["epochs"] == 4
    assert training["sessions"] == [{"start_epoch": 1, "epochs_planned": 3}, {"start_epoch": 4, "epochs_planned": 4}]
    with pytest.raises(ValueError, match="width"):
        train(_config(mini_data, run, epochs=5, resume=True, width=0.25))


def test_unetpp_trains_with_deep_supervision(mini_data, tmp_path):
    result = train(_config(mini_data, tmp_path / "pp", arch="unetpp", width=0.0625, patch=(16, 32, 16), epochs=1,
                           steps_per_epoch=2, loss="boundary_ce"))
    card = read_card(result.best)
    assert card.training["loss"] == {"name": "boundary_ce", "deep_supervision": True, "w0": 10.0, "sigma_px": 5.0}
    assert np.isfinite(result.state.history[0]["train_loss"])


def test_resampled_cases_keep_their_labels_and_physical_extent(mini_data):
    info = read_dataset(mini_data)
    case = read_raw(info, ["hippocampus_001"])[0]
    image, label, spacing = resample_raw(case, (1.5, 2.0, 1.25))
    assert spacing == (1.5, 2.0, 1.25) and case[2] == (1.0, 1.0, 1.0)
    expected = tuple(round(n / s) for n, s in zip(case[1].shape, (1.25, 2.0, 1.5), strict=True))
    assert image.shape[1:] == label.shape == expected
    for value in (1, 2):  # each label keeps its volume in mL within 6 %
        before, after = (case[1] == value).sum(), (label == value).sum() * 1.5 * 2.0 * 1.25
        assert abs(after / before - 1) < 0.06, (value, before, after)
    assert abs(float(image.mean()) / float(case[0].mean()) - 1) < 0.02
    assert resample_raw(case, (1.0, 1.0, 1.0))[0] is case[0]  # already there: nothing resampled


def test_training_at_a_coarser_spacing_is_recorded_in_the_card(mini_data, tmp_path):
    result = train(_config(mini_data, tmp_path / "coarse", spacing=(1.25, 1.25, 1.25), patch=(16, 32, 16),
                           epochs=1, steps_per_epoch=2))
    card = read_card(result.best)
    assert card.spacing == (1.25, 1.25, 1.25) and card.training["resampled_to_mm"] == [1.25, 1.25, 1.25]
    with pytest.raises(ValueError, match="spacing must be 3 positive sizes"):
        _config(mini_data, tmp_path / "bad", spacing=(1.0, 0.0, 1.0))


def test_boundary_weights_peak_between_touching_objects():
    label = np.zeros((12, 40, 40), np.uint8)
    label[3:9, 5:15, 5:19] = 1  # two objects of one class, 2 voxels apart
    label[3:9, 5:15, 21:35] = 1
    label[3:9, 25:35, 5:20] = 1  # and two classes touching face to face
    label[3:9, 25:35, 20:35] = 2
    w = boundary_weight_map(label, 3, w0=10.0, sigma=5.0)
    background_w = w[0, 0, 0]
    assert w[5, 10, 19:21].min() - background_w > 8.0  # in the gap: d1 = d2 = 1 -> 10 exp(-4/50) = 9.2
    assert w[5, 30, 19:21].min() > 8.0  # along the touching faces
    assert w[0, 0, 39] == pytest.approx(background_w, abs=0.01)  # near one object only
    assert w.max() < 10.0 + w[label > 0].max()


def test_dice_loss_of_a_perfect_prediction_is_about_zero():
    target = torch.randint(0, 3, (2, 8, 12, 10))
    perfect = 50.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert soft_dice_loss(perfect, target) < 1e-4
    assert ce_dice_loss(perfect, target) < 1e-4
    wrong = 50.0 * torch.nn.functional.one_hot((target + 1) % 3, 3).movedim(-1, 1).float()
    assert soft_dice_loss(wrong, target) > 0.99
    assert deep_supervision_weights(4) == pytest.approx([1 / 15, 2 / 15, 4 / 15, 8 / 15])
    heads = [perfect, wrong]
    combined = supervised_loss(lambda o, t, w: soft_dice_loss(o, t), heads, target, None)
    assert combined == pytest.approx(2 / 3 * float(soft_dice_loss(wrong, target)), abs=1e-4)


def _blob_case() -> Case:
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in (20, 30, 24)), indexing="ij")
    label = np.zeros((20, 30, 24), np.uint8)
    label[((zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) < 36] = 1
    label[((zz - 10) ** 2 + (yy - 20) ** 2 + (xx - 12) ** 2) < 25] = 2
    fg = {c: np.flatnonzero(label.reshape(-1) == c) for c in (1, 2)}
    image = torch.from_numpy(label.astype(np.float32))[None]
    weight = torch.from_numpy(boundary_weight_map(label, 3))
    return Case("blob", image, torch.from_numpy(label), (1.0, 1.0, 2.0), fg, weight)


def test_augmentation_keeps_labels_aligned_with_images():
    case = _blob_case()
    spatial_only = AugmentConfig(p_rotate=1.0, p_scale=1.0, p_elastic=1.0, p_gamma=0, p_brightness=0, p_contrast=0,
                                 p_noise=0, p_blur=0, p_bias=0)
    sampler = PatchSampler([case], (16, 24, 16), 1.0, spatial_only, torch.Generator().manual_seed(0), mri=True)
    for _ in range(8):
        batch = sampler.sample(2)
        assert batch.image.shape == (2, 1, 16, 24, 16) and batch.weight.shape == (2, 16, 24, 16)
        assert set(batch.label.unique().tolist()) <= {0, 1, 2}
        assert (batch.label > 0).any()
        agree = (batch.image[:, 0].round().long() == batch.label).float().mean()
        assert agree > 0.95, float(agree)


def test_without_augmentation_a_patch_is_an_exact_crop():
    case = _blob_case()
    grid = sample_grid(np.array([2, -3, 5]), (16, 24, 16), (20, 30, 24), torch.eye(3, dtype=torch.float64))
    image, label, _ = warp(case, grid)
    expected = torch.zeros(16, 24, 16, dtype=torch.long)
    expected[:, 3:, :] = case.label[2:18, 0:21, 5:21].long()
    assert torch.equal(label, expected)
    torch.testing.assert_close(image[0], expected.float(), atol=1e-4, rtol=0)
    sampler = PatchSampler([case], (16, 24, 16), 0.0, NO_AUGMENT, torch.Generator().manual_seed(1))
    x = sampler.sample(3)
    torch.testing.assert_close(x.image[:, 0], x.label.float(), atol=1e-4, rtol=0)


def test_split_is_seeded_keeps_included_cases_and_is_checked(tmp_path):
    names = [f"case_{i:03d}" for i in range(50)]
    split = make_split(names, 0.2, 7, ("case_001", "case_003"))
    assert split == make_split(names, 0.2, 7, ("case_001", "case_003"))
    assert len(split["validation"]) == 10 and {"case_001", "case_003"} <= set(split["validation"])
    assert sorted(split["train"] + split["validation"]) == names
    with pytest.raises(ValueError, match="case_999"):
        make_split(names, 0.2, 7, ("case_999",))
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": names[:30], "validation": names[29:]}))
    with pytest.raises(ValueError, match="overlap"):
        read_split(path, names)


def _write_case(folder, name, label_values=(0, 1)):
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    label = np.zeros((6, 8, 8), np.uint8)
    label[2:4, 2:6, 2:6] = label_values[-1]
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((6, 8, 8), dtype=np.float32)),
                    str(folder / "imagesTr" / f"{name}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "labelsTr" / f"{name}.nii.gz"))


def test_bad_data_sets_are_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.json does not exist"):
        read_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "t", "labels": {"0": "bg", "1": "fg"},
                                                       "modality": {"0": "CT"}}))
    _write_case(tmp_path, "a")
    _write_case(tmp_path, "b", (0, 3))
    info = read_dataset(tmp_path)
    assert info.channels == (("CT", "CT"),) and list(info.cases) == ["a", "b"]
    with pytest.raises(ValueError, match=r"label values \[3\] are not in dataset.json"):
        load_cases(info, ["b"], [Normalization("none", None)])
    (tmp_path / "labelsTr" / "a.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"image\(s\) without a label.*'a'"):
        read_dataset(tmp_path)


def test_schedules_and_the_command_line_flags(tmp_path):
    cfg = TrainConfig(data=tmp_path, out=tmp_path / "r", epochs=10, lr=0.01)
    assert learning_rate(cfg, 1) == 0.01 and 0 < learning_rate(cfg, 10) < learning_rate(cfg, 5) < 0.01
    step = dataclasses.replace(cfg, schedule="step", step_size=4)
    assert [learning_rate(step, e) for e in (1, 4, 5, 9)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    parser = add_train_parser(sub)
    args = parser.parse_args(["--data", "d", "--out", "o", "--arch", "unetpp", "--width", "0.5", "--norm", "none",
                              "--patch", "32", "48", "32", "--epochs", "7", "--batch", "3", "--lr", "1e-2",
                              "--optimizer", "sgd", "--schedule", "step", "--loss", "boundary_ce",
                              "--val-fraction", "0.25", "--val-include", "x", "y", "--name", "m", "--resume",
                              "--seed", "3", "--device", "cpu", "--spacing", "1", "1.5", "2"])
    c = config_from_args(args)
    assert (c.arch, c.width, c.norm, c.patch, c.epochs, c.batch, c.lr, c.optimizer, c.schedule, c.loss) == (
        "unetpp", 0.5, None, (32, 48, 32), 7, 3, 1e-2, "sgd", "step", "boundary_ce")
    assert (c.val_fraction, c.val_include, c.name, c.resume, c.seed, c.device, c.spacing) == (
        0.25, ("x", "y"), "m", True, 3, "cpu", (1.0, 1.5, 2.0))
    with pytest.raises(ValueError, match="loss must be one of"):
        dataclasses.replace(c, loss="focal")
