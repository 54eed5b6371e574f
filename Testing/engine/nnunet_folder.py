"""Build nnU-Net v2 results folders as nnU-Net 2.8 writes them, from MedSeg's own networks (for the importer tests).

The layout, plans keys and checkpoint keys are those of a real nnU-Net 2.8.1 training (see
``../shared/notes/nnunet-interop.md``): ``plans.json`` (``configurations.<cfg>.architecture`` with
``network_class_name``, ``arch_kwargs`` and ``_kw_requires_import``), ``dataset.json`` (``channel_names``,
``labels``, ``numTraining``, ``file_ending``), ``fold_N/checkpoint_final.pth`` holding ``network_weights`` with
nnU-Net's duplicate keys (``...all_modules.K.*``, ``decoder.encoder.*``) and deep-supervision heads,
``optimizer_state``, ``grad_scaler_state``, ``logging`` (numpy scalars), ``_best_ema``, ``current_epoch``,
``init_args``, ``trainer_name`` and ``inference_allowed_mirroring_axes``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.models import build_model

PLAIN_KWARGS = {
    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
}
RESENC_KWARGS = {
    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
}
CLASSES = {"plain": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
           "resenc": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"}


def plans_json(kind: str = "plain", patch=(8, 16, 16), spacing=(2.0, 1.0, 1.0), transpose=(0, 1, 2),
               scheme: str = "ZScoreNormalization") -> dict[str, Any]:
    kwargs = copy.deepcopy(PLAIN_KWARGS if kind == "plain" else RESENC_KWARGS)
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": [20.0, 30.0, 28.0], "spacing": list(spacing),
        "normalization_schemes": [scheme], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": CLASSES[kind], "arch_kwargs": kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset777_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [20, 30, 28],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose),
        "transpose_backward": [int(i) for i in np.argsort(transpose)],
        "configurations": {"3d_fullres": config,
                           "3d_lowres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                                         "spacing": [4.0, 2.0, 2.0], "next_stage": "3d_cascade_fullres"},
                           "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1500.0, "mean": 80.5, "median": 60.0, "min": -1000.0, "percentile_00_5": -100.0,
            "percentile_99_5": 400.0, "std": 120.25}},
    }


def dataset_json(labels: dict[str, Any] | None = None, channel: str = "MRI") -> dict[str, Any]:
    return {"channel_names": {"0": channel}, "labels": labels or {"background": 0, "anterior": 1, "posterior": 2},
            "numTraining": 10, "file_ending": ".nii.gz", "name": "Tiny", "licence": "CC-BY-SA 4.0"}


def medseg_network(plans: dict[str, Any], seed: int, cfg: str = "3d_fullres", num_classes: int = 3):
    """MedSeg's network for a plans' configuration, with random weights (norm affine parameters too)."""
    from medseg.nnunet import architecture_args

    name, args = architecture_args(plans["configurations"][cfg], 1, num_classes, Path("."))
    torch.manual_seed(seed)
    model = build_model(name, **args).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.randn_like(value) * (0.3 if "conv" in key or "head" in key else 0.1)
                            + (1.0 if key.endswith("norm.weight") else 0.0))
    return model


def nnunet_weights(model) -> dict[str, torch.Tensor]:
    """MedSeg's state dict renamed and duplicated as nnU-Net's ``network_weights`` (shared tensors, as
    ``state_dict()`` of nnU-Net's network returns them), with deep-supervision heads."""
    state = model.state_dict()
    stages = len(model.config["features"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("head."):
            out[f"decoder.seg_layers.{stages - 2}." + key.removeprefix("head.")] = value
            continue
        out[key] = value
        m = re.match(r"^(.*)\.(conv|norm)\.([^.]+)$", key)
        if m:  # ConvDropoutNormReLU.all_modules = Sequential(conv, norm, nonlin)
            out[f"{m.group(1)}.all_modules.{0 if m.group(2) == 'conv' else 1}.{m.group(3)}"] = value
    for key, value in list(out.items()):
        if key.startswith("encoder."):
            out["decoder." + key] = value  # UNetDecoder keeps a reference to the encoder
    features = model.config["features"]
    for s in range(stages - 2):  # deep-supervision heads of the coarser decoder stages
        cin = features[-(s + 2)]
        out[f"decoder.seg_layers.{s}.weight"] = torch.randn(model.num_classes, cin, 1, 1, 1)
        out[f"decoder.seg_layers.{s}.bias"] = torch.randn(model.num_classes)
    return out


def checkpoint_dict(weights: dict[str, torch.Tensor], plans: dict[str, Any], dataset: dict[str, Any], fold: int,
                    cfg: str = "3d_fullres", mirror=(0, 1, 2)) -> dict[str, Any]:
    return {
        "network_weights": weights,
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                            "param_groups": [{"lr": np.float64(0.01), "momentum": 0.99, "params": [0]}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.6)], "ema_fg_dice": [np.float64(0.55)],
                    "train_losses": [np.float32(-0.3)], "val_losses": [np.float32(-0.2)],
                    "lrs": [0.01], "epoch_start_timestamps": [1.0], "epoch_end_timestamps": [2.0],
                    "dice_per_class_or_region": [[np.float64(0.4), np.float64(0.6)]]},
        "_best_ema": np.float64(0.55), "current_epoch": 12,
        "init_args": {"plans": plans, "configuration": cfg, "fold": fold, "dataset_json": dataset,
                      "device": "cpu"},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": mirror,
    }


def write_results_folder(root: Path, kind: str = "plain", folds=(0,), seeds=None, plans=None, dataset=None,
                         mirror=(0, 1, 2), checkpoint: str = "checkpoint_final.pth") -> tuple[Path, list]:
    """``root/Dataset777_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres`` with one checkpoint per fold; returns the
    folder and the MedSeg networks the folds' weights came from."""
    plans = plans or plans_json(kind)
    dataset = dataset or dataset_json()
    folder = root / "Dataset777_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=4))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=4))
    models = []
    for i, fold in enumerate(folds):
        model = medseg_network(plans, seed=(seeds or range(100))[i], num_classes=len(dataset["labels"]))
        models.append(model)
        (folder / f"fold_{fold}").mkdir()
        ckpt = checkpoint_dict(nnunet_weights(model), plans, dataset, fold, mirror=mirror)
        torch.save(ckpt, folder / f"fold_{fold}" / checkpoint)
    return folder, models
