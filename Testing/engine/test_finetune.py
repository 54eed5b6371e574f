"""``medseg finetune``: a tiny parent trained on real hippocampus cases, fine-tuned on real cases saved as a
corrections folder; the lineage in the card, the refusal when validation Dice drops, each bad input, and that an
interrupted or failed run writes no checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.calibration import expected_calibration_error, negative_log_likelihood, temper
from medseg.checkpoint import load_checkpoint, read_card, save_checkpoint
from medseg.cli import main
from medseg.cli_export import checkpoint_sha256
from medseg.outputs import OutputError
from medseg.train import AugmentConfig, TrainConfig, train
from medseg.train.finetune import (
    MAX_DROP,
    FinetuneConfig,
    FinetuneRefused,
    check_drop,
    finetune,
    finetuned_name,
)

PARENT_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_008",
                "hippocampus_011"]
CORRECTIONS = ["hippocampus_014", "hippocampus_015", "hippocampus_019", "hippocampus_020"]
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _decathlon(src, root, cases, provenance: bool = False):
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for case in cases:
            shutil.copy(src / sub / f"{case}.nii.gz", root / sub / f"{case}.nii.gz")
    shutil.copy(src / "dataset.json", root / "dataset.json")
    if provenance:
        (root / "provenance").mkdir()
        for case in cases:
            (root / "provenance" / f"{case}.json").write_text(json.dumps({"model": "tiny-hippocampus"}))
    return root


@pytest.fixture(scope="module")
def parent(shared_data, tmp_path_factory):
    """A tiny network trained briefly on six real cases: its best checkpoint, its data and split."""
    data = _decathlon(shared_data / "hippocampus", tmp_path_factory.mktemp("parent_data"), PARENT_CASES)
    out = tmp_path_factory.mktemp("parent_run") / "run"
    torch.manual_seed(0)
    train(TrainConfig(data=data, out=out, name="tiny-hippocampus", width=0.125, depth=3, patch=(24, 32, 24),
                      epochs=4, steps_per_epoch=8, batch=2, lr=3e-3, val_every=4, fg_fraction=1.0,
                      val_fraction=0.34, val_include=("hippocampus_001", "hippocampus_003"),
                      augment=AugmentConfig(enabled=False), num_threads=1))
    return out / "best.safetensors", data, out / "split.json"


@pytest.fixture
def corrections(shared_data, tmp_path):
    return _decathlon(shared_data / "hippocampus", tmp_path / "corrections", CORRECTIONS, provenance=True)


def _config(parent, corrections, out, **changes) -> FinetuneConfig:
    checkpoint, data, split = parent
    base = dict(model=str(checkpoint), corrections=corrections, out=out, steps=3, lr=1e-4, holdout=1,
                replay=data, replay_split=split, num_threads=1)
    return FinetuneConfig(**{**base, **changes})


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors" or "medseg" in p.name)


def test_the_card_records_the_lineage_and_the_scores(parent, corrections, tmp_path):
    out = tmp_path / "ft.safetensors"
    result = finetune(_config(parent, corrections, out, force=True), now=NOW)
    card = read_card(out)
    assert card.name == "tiny-hippocampus-ft-20260102" == finetuned_name("tiny-hippocampus", NOW.date())
    ft = card.training["fine_tune"]
    assert ft["parent"] == {"name": "tiny-hippocampus", "file": "best.safetensors",
                            "sha256": checkpoint_sha256(parent[0])}
    assert ft["date"] == "2026-01-02T03:04:05+00:00"
    assert len(ft["corrections"]["held_out"]) == 1 and len(ft["corrections"]["used"]) == 3
    assert sorted(ft["corrections"]["used"] + ft["corrections"]["held_out"]) == CORRECTIONS
    assert ft["replay"]["train_cases"] == 4 and ft["settings"]["steps"] == 3 and ft["settings"]["lr"] == 1e-4
    for kind, cases in (("holdout", 1), ("validation", 2)):
        s = ft["scores"][kind]
        assert s["before"]["cases"] == s["after"]["cases"] == cases
        assert 0 <= s["before"]["mean_dice"] <= 1 and 0 <= s["after"]["mean_dice"] <= 1
    assert card.metrics["mean_dice"] == ft["scores"]["validation"]["after"]["mean_dice"]
    assert card.training["dataset"] == read_card(parent[0]).training["dataset"]
    assert card.calibration["temperature"] == ft["calibration"]["temperature"] and ft["calibration"]["refitted"]
    assert "volume_interval" not in card.calibration and "at least 9 needed" in card.calibration["notes"]  # 2 cases
    before = load_checkpoint(parent[0]).model.state_dict()
    after = load_checkpoint(out).model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights did change
    assert result.used == ft["corrections"]["used"] and result.skipped == []


def test_the_drop_rule_on_given_numbers():
    check_drop(0.80, 0.80 - MAX_DROP + 1e-6)  # within the limit: saved
    check_drop(0.80, 0.90)
    with pytest.raises(FinetuneRefused, match=r"from 0\.8000 to 0\.7800"):
        check_drop(0.80, 0.78)
    check_drop(0.80, 0.50, force=True)


def test_a_drop_refuses_to_save_and_writes_nothing(parent, corrections, tmp_path, capsys):
    out = tmp_path / "ft.safetensors"
    args = ["finetune", "--model", str(parent[0]), "--corrections", str(corrections), "--out", str(out),
            "--steps", "4", "--lr", "0.3", "--holdout", "1", "--replay", str(parent[1]), "--replay-split",
            str(parent[2]), "--threads", "1"]
    assert main(args) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and error[0].startswith("medseg finetune: error: fine-tuning lowered the parent's ")
    assert re.search(r"Dice from \d\.\d{4} to \d\.\d{4}", error[0]) and "--force" in error[0]
    assert _left(tmp_path) == []
    assert main([*args, "--force"]) == 0 and out.is_file()


def test_a_correction_on_another_grid_is_refused(parent, corrections, tmp_path):
    path = corrections / "labelsTr" / "hippocampus_015.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetSpacing((2.0, 1.0, 1.0))
    sitk.WriteImage(label, str(path))
    with pytest.raises(ValueError, match="hippocampus_015.nii.gz: the correction lies on another grid"):
        finetune(_config(parent, corrections, tmp_path / "ft.safetensors"))
    assert _left(tmp_path) == []


def test_labels_the_model_does_not_have_are_refused(parent, corrections, tmp_path):
    path = corrections / "labelsTr" / "hippocampus_014.nii.gz"
    label = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 5
    fixed = sitk.GetImageFromArray(array)
    fixed.CopyInformation(label)
    sitk.WriteImage(fixed, str(path))
    with pytest.raises(ValueError, match=r"label values \[5\] are not labels of model tiny-hippocampus"):
        finetune(_config(parent, corrections, tmp_path / "ft.safetensors"))
    meta = json.loads((corrections / "dataset.json").read_text())
    meta["labels"]["3"] = "amygdala"
    (corrections / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="3='amygdala' are not labels of model tiny-hippocampus"):
        finetune(_config(parent, corrections, tmp_path / "ft.safetensors"))


def test_an_empty_corrections_folder_is_refused(parent, tmp_path):
    empty = tmp_path / "empty"
    (empty / "imagesTr").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no corrections"):
        finetune(_config(parent, empty, tmp_path / "ft.safetensors"))
    with pytest.raises(ValueError, match="holds no corrections"):
        finetune(_config(parent, tmp_path / "missing", tmp_path / "ft.safetensors"))


def test_a_corrupt_case_is_skipped_with_a_warning(parent, corrections, tmp_path, caplog):
    path = corrections / "imagesTr" / "hippocampus_020.nii.gz"
    path.write_bytes(path.read_bytes()[:-2000])  # a truncated download
    out = tmp_path / "ft.safetensors"
    with caplog.at_level(logging.WARNING):
        result = finetune(_config(parent, corrections, out, steps=1, force=True))
    assert result.skipped == ["hippocampus_020"] and "hippocampus_020" not in result.used
    assert "skipped correction hippocampus_020" in caplog.text
    assert read_card(out).training["fine_tune"]["corrections"]["skipped"] == ["hippocampus_020"]


def test_ctrl_c_during_training_writes_nothing(parent, corrections, tmp_path):
    def interrupt(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    out = tmp_path / "ft.safetensors"
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(parent, corrections, out, replay=None, replay_split=None), interrupt)
    assert _left(tmp_path) == []


def test_an_unwritable_destination_fails_before_any_work(parent, corrections, tmp_path):
    calls = []
    with pytest.raises(OutputError):
        finetune(_config(parent, corrections, tmp_path / "no" / "such" / "ft.safetensors"), calls.append)
    assert calls == []


def test_without_replay_only_the_held_out_corrections_are_scored(parent, corrections, tmp_path):
    out = tmp_path / "ft.safetensors"
    result = finetune(_config(parent, corrections, out, replay=None, replay_split=None, holdout=2, steps=2))
    assert set(result.scores) == {"holdout"} and result.scores["holdout"]["before"]["cases"] == 2
    card = read_card(out)
    assert card.metrics == {} and card.training["fine_tune"]["replay"]["train_cases"] == 0
    assert np.isfinite(card.training["fine_tune"]["final_loss"])
    with pytest.raises(ValueError, match="--holdout 4 leaves no correction"):
        finetune(_config(parent, corrections, out, holdout=4))


def _calibrated_parent(parent, folder):
    """The parent with a calibration in its card (as a bundled model has one)."""
    loaded = load_checkpoint(parent[0])
    calibration = {"temperature": 3.0, "ece_before": 0.05, "ece_after": 0.01, "volume_interval": {
        "level": 0.9, "method": "split-conformal relative volume error",
        "per_label": {label.name: {"q": 0.2, "n": 30} for label in loaded.card.foreground_labels}}}
    card = dataclasses.replace(loaded.card, calibration=calibration)
    return (save_checkpoint(folder / "calibrated.safetensors", loaded.model, card), *parent[1:])


def test_the_calibration_is_refitted_on_the_parents_validation_cases(parent, corrections, tmp_path):
    """Not the parent's temperature: the NLL minimiser of the fine-tuned network's probabilities in the band on the
    validation cases, with the band ECE before/after measured on them (checked here through the engine)."""
    calibrated = _calibrated_parent(parent, tmp_path)
    out = tmp_path / "ft.safetensors"
    finetune(_config(calibrated, corrections, out, force=True), now=NOW)
    card = read_card(out)
    record = card.training["fine_tune"]["calibration"]
    assert record["refitted"] and record["cases"] == 2 and record["parent"]["temperature"] == 3.0
    temperature = card.calibration["temperature"]
    assert temperature != 3.0 and record["ece_before"] == card.calibration["ece_before"]

    child = load_checkpoint(out)
    plain = dataclasses.replace(child, card=dataclasses.replace(child.card, calibration=None))
    data, target = _band_probabilities(plain, parent)
    assert expected_calibration_error(np.exp(data), target) == pytest.approx(card.calibration["ece_before"], abs=1e-5)
    assert record["ece_with_parent_temperature"] == pytest.approx(
        expected_calibration_error(temper(np.exp(data), 3.0, axis=1), target), abs=1e-5)
    nll = [negative_log_likelihood(data, target, temperature * f) for f in (0.9, 1.0, 1.1)]
    assert nll[1] < nll[0] and nll[1] < nll[2]  # T minimises the NLL of the new network's band voxels


def _band_probabilities(loaded, parent) -> tuple[np.ndarray, np.ndarray]:
    """The band voxels' log-probabilities and targets of the split's validation cases, segmented by the engine."""
    from medseg.calibration_fit import LabelledCase, collect_cases
    from medseg.inference import Segmenter
    from medseg.io import read_image

    data = parent[1]
    names = json.loads(parent[2].read_text())["validation"]
    cases = [LabelledCase(n, lambda n=n: (*read_image(data / "imagesTr" / f"{n}.nii.gz"),
                                          read_image(data / "labelsTr" / f"{n}.nii.gz")[0])) for n in names]
    collected = collect_cases(Segmenter(loaded, device="cpu"), cases, 3.0)
    return (np.concatenate([c["log_probs"] for c in collected]), np.concatenate([c["target"] for c in collected]))


def test_without_a_validation_split_the_parents_calibration_is_dropped_with_a_warning(parent, corrections, tmp_path,
                                                                                       caplog):
    calibrated = _calibrated_parent(parent, tmp_path)
    out = tmp_path / "ft.safetensors"
    with caplog.at_level(logging.WARNING):
        finetune(_config(calibrated, corrections, out, replay=None, replay_split=None, holdout=1, steps=1))
    card = read_card(out)
    assert card.calibration is None
    record = card.training["fine_tune"]["calibration"]
    assert not record["refitted"] and record["parent"] == {"temperature": 3.0, "ece_before": 0.05, "ece_after": 0.01}
    assert "temperature and volume interval were dropped" in record["note"] and "--replay" in record["note"]
    assert "has no calibration" in caplog.text

