"""medseg import-nnunet refuses bad input with one clear message and writes nothing."""

from __future__ import annotations

import json

import pytest
import torch
from nnunet_folder import dataset_json, plans_json, write_results_folder

from medseg.cli import main
from medseg.nnunet import import_nnunet


class _Payload:
    """Unpickling this would create a file: the proof that the importer never runs a checkpoint's code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _refused(folder, tmp_path, match, error=ValueError, **kwargs):
    out = tmp_path / "out.safetensors"
    with pytest.raises(error, match=match) as exc:
        import_nnunet(folder, out, **kwargs)
    assert not out.exists() and not list(tmp_path.glob("out.safetensors*"))
    assert "\n" not in str(exc.value).strip()
    return str(exc.value)


def test_not_a_results_folder(tmp_path):
    _refused(tmp_path / "missing", tmp_path, "does not exist", FileNotFoundError)
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", tmp_path, "not an nnU-Net results folder: no plans.json and no dataset.json")
    folder, _ = write_results_folder(tmp_path / "r")
    message = _refused(folder.parent, tmp_path, "not an nnU-Net results folder")
    assert "nnUNetTrainer__nnUNetPlans__3d_fullres" in message  # points at the folder inside


def test_missing_fold_or_checkpoint(tmp_path):
    folder, _ = write_results_folder(tmp_path / "r", folds=(0, 1))
    message = _refused(folder, tmp_path, "fold_3", FileNotFoundError, folds=[0, 3])
    assert "fold_0, fold_1" in message
    _refused(folder, tmp_path, "checkpoint_best.pth", FileNotFoundError, checkpoint="best")
    _refused(folder, tmp_path, "fold_all", FileNotFoundError, folds="all")


def test_plans_and_checkpoint_disagree(tmp_path):
    folder, _ = write_results_folder(tmp_path / "r")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [4, 8, 32]
    (folder / "plans.json").write_text(json.dumps(plans))
    _refused(folder, tmp_path, "plans and checkpoint disagree")  # the checkpoint's own plans say [4, 8, 16]
    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["init_args"]["plans"] = plans
    torch.save(ckpt, ckpt_path)
    message = _refused(folder, tmp_path, "plans.json and .* disagree")  # the weights' shapes then say so
    assert "shape mismatch" in message
    ckpt["init_args"]["configuration"] = "2d"
    torch.save(ckpt, ckpt_path)
    _refused(folder, tmp_path, "trained as configuration '2d'.*disagree")


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, capsys):
    folder, _ = write_results_folder(tmp_path / "r")
    marker = tmp_path / "payload-ran"
    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["logging"]["surprise"] = _Payload(str(marker))
    torch.save(ckpt, ckpt_path)
    assert not marker.exists()
    _refused(folder, tmp_path, "refused to load .*code was not run")
    assert not marker.exists()
    assert main(["import-nnunet", str(folder), "--output", str(tmp_path / "cli.safetensors")]) == 2
    assert "code was not run" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "cli.safetensors").exists()
    torch.load(ckpt_path, weights_only=False)  # the payload is real: plain unpickling runs it
    assert marker.exists()


def test_unsupported_network_class_is_named(tmp_path):
    plans = plans_json()
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = \
        "dynamic_network_architectures.architectures.unet.ResidualUNet"
    folder, _ = write_results_folder(tmp_path / "r", plans=plans_json())
    (folder / "plans.json").write_text(json.dumps(plans))
    _refused(folder, tmp_path, "network class 'dynamic_network_architectures.architectures.unet.ResidualUNet' is "
                               "not supported; MedSeg runs nnU-Net's PlainConvUNet and ResidualEncoderUNet")


def test_cascade_configuration_is_refused_with_the_reason(tmp_path):
    folder, _ = write_results_folder(tmp_path / "r")
    _refused(folder, tmp_path, "cascade stage.*segmentation of the 3d_lowres stage as extra input",
             configuration="3d_cascade_fullres")
    _refused(folder, tmp_path, "no configuration '3d_midres'", configuration="3d_midres")


def test_region_based_labels_are_refused(tmp_path):
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    dataset = {**dataset_json(regions), "regions_class_order": [1, 2, 3]}
    folder, _ = write_results_folder(tmp_path / "r", dataset=dataset_json())
    (folder / "dataset.json").write_text(json.dumps(dataset))
    _refused(folder, tmp_path, "region-based.*sigmoid")


def test_unsupported_normalisation_and_old_plans(tmp_path):
    folder, _ = write_results_folder(tmp_path / "r", plans=plans_json(scheme="RGBTo01Normalization"))
    _refused(folder, tmp_path, "normalisation 'RGBTo01Normalization' of channel 0 is not supported")
    plans = plans_json()
    del plans["configurations"]["3d_fullres"]["architecture"]
    (folder / "plans.json").write_text(json.dumps(plans))
    _refused(folder, tmp_path, "older than 2.4")


@pytest.mark.parametrize(("field", "value", "where"), [
    ("inference", {"windows": "monai"}, "inference.windows"),
    ("inference", {"transpose": [0, 0, 1]}, "inference.transpose"),
    ("inference", {"crop_nonzero": "yes"}, "inference.crop_nonzero"),
    ("inference", {"mirror_axes": [0, 3]}, "inference.mirror_axes"),
    ("inference", {"mask_normalization": [True, False]}, "inference.mask_normalization"),
    ("inference", {"resample": "spline"}, "inference.resample: unknown key"),
    ("ensemble", ["fold_0"], "ensemble"),
    ("ensemble", ["fold_0", "fold_0"], "ensemble: weight-set names must differ"),
])
def test_card_refuses_bad_nnunet_fields(tiny_model, field, value, where):
    from card_support import card_dict

    from medseg.card import ModelCard

    card = card_dict(tiny_model)
    card[field] = value
    with pytest.raises(ValueError, match=where):
        ModelCard.from_dict(card)
    card[field] = None  # absent or null: an ordinary card, as every card written before these fields
    assert ModelCard.from_dict(card).inference is None


def test_card_has_an_orientation_or_a_transpose(tiny_model):
    from card_support import card_dict

    from medseg.card import ModelCard

    card = {**card_dict(tiny_model), "orientation": "RAS", "inference": {"transpose": [0, 1, 2]}}
    with pytest.raises(ValueError, match="either an orientation or a transpose"):
        ModelCard.from_dict(card)
