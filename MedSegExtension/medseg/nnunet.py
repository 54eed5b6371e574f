"""Bring a model trained with nnU-Net v2: its results folder -> one MedSeg checkpoint (``medseg import-nnunet``).

An nnU-Net results folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``) holds
``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth`` (and ``checkpoint_best.pth``). The importer:

- reads each checkpoint with ``torch.load(weights_only=True)``, widened only by the numpy types nnU-Net's
  pickles hold (:data:`NUMPY_SAFE_GLOBALS`; they rebuild dtypes and scalars, they run no code): a checkpoint
  that needs anything else is refused and its code never runs;
- keeps ``network_weights`` only, removes nnU-Net's duplicate keys (``...all_modules.K.*`` repeat
  ``...conv.*``/``...norm.*``; ``decoder.encoder.*`` repeats ``encoder.*``; each checked equal before it is
  dropped) and the deep-supervision heads (``decoder.seg_layers.0..n-2``, unused at inference), and loads the
  rest into MedSeg's own PlainConvUNet / ResidualEncoderUNet (``medseg.models``) with ``strict=True``;
- writes a card with what nnU-Net's predictor does: normalisation per channel (z-score per image; CT: the
  fingerprint's 0.5/99.5 percentiles, mean and std), spacing and patch in nnU-Net's transposed axis order, the
  transpose of the stored voxel order (no reorientation: nnU-Net keeps the voxel order of the file), the crop to
  the non-zero box, nnU-Net's window layout and Gaussian, the mirroring axes, labels with their names, and where
  it came from (trainer, plans, configuration, folds, SHA-256 of every source file). Several folds become one
  checkpoint whose logits are averaged (``ModelCard.ensemble``).

Not taken (refused with the reason): cascade configurations (``3d_cascade_fullres`` needs the low-resolution
stage's segmentation as an input channel), region-based label sets (overlapping regions with sigmoid outputs),
other network classes, normalisation schemes other than z-score, CT, none and rescale-to-0-1.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .card import InputChannel, Label, ModelCard, Normalization
from .checkpoint import _load_weights, save_checkpoint
from .models import build_model
from .models.ensemble import Ensemble
from .text import printable

__all__ = ["NUMPY_SAFE_GLOBALS", "NnUNetImport", "import_nnunet", "is_results_folder", "network_state",
           "read_nnunet_checkpoint"]

CHECKPOINT_NAMES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
MAX_JSON_BYTES = 50_000_000
NETWORKS = {"PlainConvUNet": "plain_conv_unet", "ResidualEncoderUNet": "residual_encoder_unet"}
NORMALIZATIONS = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "NoNormalization": "none",
                  "RescaleTo01Normalization": "minmax"}
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180)]


def _numpy_safe_globals() -> list[Any]:
    """The numpy types nnU-Net's checkpoints pickle (dtypes and scalars in its logging and init_args)."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    names = ("Float32DType", "Float64DType", "Int64DType", "Int32DType", "BoolDType")
    return [np.dtype, core.multiarray.scalar, *(getattr(np.dtypes, n) for n in names if hasattr(np.dtypes, n))]


NUMPY_SAFE_GLOBALS = _numpy_safe_globals()


@dataclass(frozen=True)
class NnUNetImport:
    """What :func:`import_nnunet` wrote: the checkpoint, its card, and the folds it holds."""

    path: Path
    card: ModelCard
    folds: tuple[str, ...]


def is_results_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a folder that looks like an nnU-Net results folder (plans.json, dataset.json, a fold_* folder)."""
    p = Path(folder)
    return p.is_dir() and (p / "plans.json").is_file() and (p / "dataset.json").is_file() and any(
        c.is_dir() and c.name.startswith("fold_") for c in p.iterdir())


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {what} is over {MAX_JSON_BYTES // 1_000_000} MB; is this an nnU-Net results folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: {what} is not valid JSON ({str(exc)[:200]}); nnU-Net writes it itself, "
                         f"copy it again from the training machine") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must be a JSON object; copy it again from the training machine")
    return data


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"nnU-Net results folder {str(folder)!r} does not exist; give the folder nnU-Net "
                                f"trained into (nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration)")
    missing = [n for n in ("plans.json", "dataset.json") if not (folder / n).is_file()]
    if missing:
        inner = sorted(str(c.name) for c in folder.iterdir() if c.is_dir() and (c / "plans.json").is_file())
        hint = f"; it holds the results folders {inner}: give one of them" if inner else (
            "; give the folder nnU-Net trained into (nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration)")
        raise ValueError(f"{folder} is not an nnU-Net results folder: no {' and no '.join(missing)}{hint}")


def _configuration(plans: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """The configuration with its ``inherits_from`` chain merged (as nnU-Net's PlansManager)."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or name not in configs:
        names = sorted(configs) if isinstance(configs, dict) else []
        raise ValueError(f"{source}: plans.json has no configuration {name!r} (it has {names}); pick one with "
                         f"--configuration")
    chain, seen = [], set()
    while name is not None:
        if name in seen or name not in configs or not isinstance(configs[name], dict):
            raise ValueError(f"{source}: plans.json: configuration {name!r} inherits from a missing or circular "
                             f"configuration; the plans are damaged")
        seen.add(name)
        chain.append(configs[name])
        name = configs[name].get("inherits_from")
    merged: dict[str, Any] = {}
    for config in reversed(chain):
        merged.update(config)
    merged.pop("inherits_from", None)
    return merged


def _refuse_unsupported(config: dict[str, Any], dataset: dict[str, Any], cfg_name: str, folder: Path) -> None:
    if config.get("previous_stage") or "cascade" in cfg_name:
        raise ValueError(f"{folder}: configuration {cfg_name!r} is a cascade stage: nnU-Net feeds it the "
                         f"segmentation of the {config.get('previous_stage') or 'low-resolution'} stage as extra input "
                         f"channels, which MedSeg does not run; import a single-stage configuration (3d_fullres, "
                         f"3d_lowres or 2d) instead")
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{folder}/dataset.json has no 'labels' object; copy it again from the training machine")
    if "regions_class_order" in dataset or any(isinstance(v, list | tuple) for v in labels.values()):
        raise ValueError(f"{folder}: the model was trained region-based (dataset.json labels with lists of label ids, "
                         f"regions_class_order): its outputs are overlapping regions with sigmoid activations, not one "
                         f"label per voxel, which MedSeg does not support; retrain without regions to import it")


def _kind(dotted: Any, table: dict[str, str], what: str, folder: Path) -> str | None:
    """The last part of an nnU-Net class path (``torch.nn.modules.conv.Conv3d``) looked up in `table`."""
    if dotted is None:
        return None
    name = str(dotted).rsplit(".", 1)[-1]
    for key, value in table.items():
        if name == key:
            return value
    raise ValueError(f"{folder}: plans.json: {what} {printable(str(dotted))!r} is not supported; MedSeg takes "
                     f"{', '.join(table)}")


_KNOWN_ARCH_KWARGS = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
                      "n_blocks_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs",
                      "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "block", "bottleneck_channels",
                      "stem_channels", "nonlin_first", "deep_supervision"}


def architecture_args(config: dict[str, Any], in_channels: int, num_classes: int, folder: Path) -> tuple[str, dict]:
    """(MedSeg architecture name, its arguments) from a configuration's ``architecture``."""
    arch = config.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs"), dict):
        raise ValueError(f"{folder}: plans.json has no 'architecture' with 'arch_kwargs' in this configuration; it "
                         f"was written by nnU-Net older than 2.4: re-plan with a current nnU-Net, or retrain")
    cls_name = str(arch.get("network_class_name", "")).rsplit(".", 1)[-1]
    if cls_name not in NETWORKS:
        raise ValueError(f"{folder}: network class {printable(str(arch.get('network_class_name')))!r} is not "
                         f"supported; MedSeg runs nnU-Net's {' and '.join(NETWORKS)}")
    kw = arch["arch_kwargs"]
    unknown = sorted(set(kw) - _KNOWN_ARCH_KWARGS)
    if unknown:
        raise ValueError(f"{folder}: plans.json arch_kwargs {unknown} are not supported by MedSeg's {cls_name}")
    if kw.get("nonlin_first"):
        raise ValueError(f"{folder}: plans.json: nonlin_first=true (non-linearity before the norm) is not supported")
    if kw.get("block") not in (None, "BasicBlockD") and not str(kw.get("block")).endswith(".BasicBlockD"):
        raise ValueError(f"{folder}: plans.json: residual block {printable(str(kw.get('block')))!r} is not supported; "
                         f"MedSeg's ResidualEncoderUNet has BasicBlockD")
    if kw.get("bottleneck_channels") is not None:
        raise ValueError(f"{folder}: plans.json: bottleneck_channels (BottleneckD blocks) are not supported")
    conv = _kind(kw.get("conv_op"), {"Conv3d": "3", "Conv2d": "2"}, "conv_op", folder)
    norm_kwargs = kw.get("norm_op_kwargs") or {}
    nonlin_kwargs = kw.get("nonlin_kwargs") or {}
    args: dict[str, Any] = {
        "spatial_dims": int(conv or 3), "in_channels": in_channels, "num_classes": num_classes,
        "features": list(kw.get("features_per_stage", [])), "kernel_sizes": kw.get("kernel_sizes"),
        "strides": kw.get("strides"), "n_conv_per_stage_decoder": kw.get("n_conv_per_stage_decoder"),
        "conv_bias": bool(kw.get("conv_bias", False)),
        "norm": _kind(kw.get("norm_op"), {"InstanceNorm3d": "instance", "InstanceNorm2d": "instance",
                                          "BatchNorm3d": "batch", "BatchNorm2d": "batch"}, "norm_op", folder),
        "norm_eps": float(norm_kwargs.get("eps", 1e-5)), "norm_affine": bool(norm_kwargs.get("affine", True)),
        "nonlin": _kind(kw.get("nonlin"), {"LeakyReLU": "leaky_relu", "ReLU": "relu"}, "nonlin", folder),
        "negative_slope": float(nonlin_kwargs.get("negative_slope", 0.01)),
    }
    if args["nonlin"] is None:
        raise ValueError(f"{folder}: plans.json: a network without a non-linearity is not supported")
    name = NETWORKS[cls_name]
    if name == "plain_conv_unet":
        args["n_conv_per_stage"] = kw.get("n_conv_per_stage")
    else:
        args["n_blocks_per_stage"] = kw.get("n_blocks_per_stage")
        args["stem_channels"] = kw.get("stem_channels")
    if kw.get("n_stages") is not None and kw["n_stages"] != len(args["features"]):
        raise ValueError(f"{folder}: plans.json: n_stages {kw['n_stages']} but {len(args['features'])} "
                         f"features_per_stage; the plans are damaged")
    return name, args


def read_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """A ``checkpoint_*.pth`` loaded with ``weights_only=True`` and the numpy safe globals only.

    Raises:
        ValueError: the file needs real unpickling (its code is not run), or is not an nnU-Net checkpoint.
    """
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"refused to load {path}: it cannot be read as tensors and plain data ({first}). Its code "
                         f"was not run: MedSeg never unpickles arbitrary objects. Use the checkpoint nnU-Net wrote "
                         f"itself, from a source you trust") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("network_weights"), dict):
        raise ValueError(f"{path} is not an nnU-Net checkpoint: it has no 'network_weights'")
    return obj


def _alias_of(key: str, tensor: torch.Tensor, state: dict[str, torch.Tensor]) -> str | None:
    """The key `key` duplicates (nnU-Net registers some modules twice), when that key holds an equal tensor."""
    candidates = []
    if key.startswith("decoder.encoder."):
        candidates.append(key.removeprefix("decoder."))
    m = re.match(r"^(.*)\.all_modules\.\d+\.([^.]+)$", key)
    if m:
        candidates += [f"{m.group(1)}.{part}.{m.group(2)}" for part in ("conv", "norm")]
    for other in candidates:
        value = state.get(other)
        if value is not None and value.shape == tensor.shape and torch.equal(value, tensor):
            return other
    return None


def network_state(weights: dict[str, Any], stages: int) -> dict[str, torch.Tensor]:
    """nnU-Net's ``network_weights`` -> MedSeg's state dict: duplicates removed (each checked equal to the key it
    repeats), ``decoder.seg_layers.<stages-2>`` renamed ``head``, the deep-supervision heads dropped."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in weights.items()
             if isinstance(v, torch.Tensor)}
    out: dict[str, torch.Tensor] = {}
    last = f"decoder.seg_layers.{stages - 2}."
    for key, value in state.items():
        if _alias_of(key, value, state) is not None:
            continue
        if key.startswith(last):
            out["head." + key.removeprefix(last)] = value
        elif not key.startswith("decoder.seg_layers."):
            out[key] = value
    return out


def _labels(dataset: dict[str, Any], folder: Path) -> list[Label]:
    items = {str(k): v for k, v in dataset["labels"].items() if str(k) != "ignore"}  # nnU-Net never predicts it
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items.values()):
        raise ValueError(f"{folder}/dataset.json: label ids must be integers, got {sorted(items.values(), key=str)}")
    by_id = {v: k for k, v in items.items()}
    if sorted(by_id) != list(range(len(items))):
        raise ValueError(f"{folder}/dataset.json: label ids must be 0..{len(items) - 1} each once (nnU-Net's rule), "
                         f"got {sorted(items.values())}")
    return [Label(i, printable(by_id[i]).strip() or f"label {i}", (0, 0, 0) if i == 0 else PALETTE[(i - 1) % len(
        PALETTE)]) for i in range(len(items))]


def _channels(dataset: dict[str, Any], config: dict[str, Any], plans: dict[str, Any], folder: Path
              ) -> list[InputChannel]:
    names = dataset.get("channel_names") or dataset.get("modality")
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{folder}/dataset.json has no 'channel_names'; copy it again from the training machine")
    schemes = config.get("normalization_schemes") or []
    if len(schemes) != len(names):
        raise ValueError(f"{folder}: plans.json lists {len(schemes)} normalization_schemes for {len(names)} channels "
                         f"in dataset.json; the plans do not belong to this data set")
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    channels = []
    for c, scheme in enumerate(schemes):
        name = printable(str(names.get(str(c), f"channel {c}"))).strip() or f"channel {c}"
        kind = NORMALIZATIONS.get(str(scheme))
        if kind is None:
            raise ValueError(f"{folder}: normalisation {printable(str(scheme))!r} of channel {c} is not supported; "
                             f"MedSeg takes {', '.join(NORMALIZATIONS)}")
        if kind == "ct":
            p = props.get(str(c)) or {}
            try:
                norm = Normalization("ct", None, (float(p["percentile_00_5"]), float(p["percentile_99_5"])),
                                     float(p["mean"]), float(p["std"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{folder}: plans.json foreground_intensity_properties_per_channel[{c}] lacks the "
                                 f"CT statistics (percentile_00_5, percentile_99_5, mean, std)") from None
        else:
            norm = Normalization(kind, None)
        upper = name.upper()
        modality = "CT" if kind == "ct" or upper == "CT" else ("MR" if upper in ("MR", "MRI", "T1", "T2", "FLAIR")
                                                               or "MRI" in upper or upper.startswith("T1")
                                                               or upper.startswith("T2") else "OT")
        channels.append(InputChannel(name, modality, norm))
    return channels


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fold_names(folder: Path, folds: Sequence[int | str] | str | None, checkpoint_file: str) -> list[str]:
    present = sorted((c.name for c in folder.iterdir() if c.is_dir() and c.name.startswith("fold_")),
                     key=lambda n: (not n[5:].isdigit(), int(n[5:]) if n[5:].isdigit() else 0, n))
    if folds is None:  # as nnU-Net's predictor: every fold_N with the checkpoint
        chosen = [n for n in present if n[5:].isdigit() and (folder / n / checkpoint_file).is_file()]
        chosen = chosen or [n for n in present if (folder / n / checkpoint_file).is_file()]
    else:
        chosen = [f"fold_{f}" for f in ([folds] if isinstance(folds, str | int) else folds)]
    have = [n for n in present if (folder / n / checkpoint_file).is_file()]
    missing = [n for n in chosen if n not in have]
    if missing or not chosen:
        raise FileNotFoundError(f"{folder}: no {checkpoint_file} for {', '.join(missing) or 'any fold'}; folds with "
                                f"one: {', '.join(have) or 'none'} (choose with --folds, or --checkpoint best/final)")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--folds names a fold twice: {chosen}")
    return chosen


def _agree(ckpt: dict[str, Any], plans: dict[str, Any], cfg_name: str, path: Path) -> None:
    """A checkpoint's own copy of the plans and configuration must match the folder's (else they disagree)."""
    init = ckpt.get("init_args") if isinstance(ckpt.get("init_args"), dict) else {}
    if init.get("configuration") not in (None, cfg_name):
        raise ValueError(f"{path} was trained as configuration {printable(str(init['configuration']))!r}, not "
                         f"{cfg_name!r}: plans and checkpoint disagree; use --configuration "
                         f"{printable(str(init['configuration']))} or the matching results folder")
    own = init.get("plans")
    if isinstance(own, dict):
        mine = _configuration(plans, cfg_name, path).get("architecture")
        theirs = (own.get("configurations") or {}).get(cfg_name)
        if isinstance(theirs, dict):
            theirs = _configuration(own, cfg_name, path).get("architecture")
            if theirs != mine:
                raise ValueError(f"{path}: its plans' {cfg_name} architecture differs from plans.json's: plans and "
                                 f"checkpoint disagree; copy plans.json and the fold folders from the same training")


def import_nnunet(folder: str | os.PathLike[str], output: str | os.PathLike[str], configuration: str | None = None,
                  folds: Sequence[int | str] | str | None = None, checkpoint: str = "final",
                  name: str | None = None) -> NnUNetImport:
    """Convert an nnU-Net v2 results folder into one MedSeg checkpoint (see the module's docstring).

    Args:
        folder: ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
        output: the ``.safetensors`` file to write (atomically).
        configuration: nnU-Net configuration (default: the folder name's last part, else ``3d_fullres``).
        folds: fold numbers (or ``"all"`` for nnU-Net's ``fold_all``); None: every ``fold_N`` with the checkpoint.
        checkpoint: ``final`` or ``best``.
        name: the card's name (default ``<dataset>-<configuration>``).

    Raises:
        FileNotFoundError / ValueError: naming the file and the fix (see the module's docstring for what is
            refused).
    """
    root = Path(folder)
    _check_folder(root)
    if checkpoint not in CHECKPOINT_NAMES:
        raise ValueError(f"--checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    plans = _read_json(root / "plans.json", "plans.json")
    dataset = _read_json(root / "dataset.json", "dataset.json")
    cfg_name = configuration or (root.name.split("__")[-1] if root.name.count("__") == 2 else "3d_fullres")
    config = _configuration(plans, cfg_name, root)
    _refuse_unsupported(config, dataset, cfg_name, root)
    labels, channels = _labels(dataset, root), _channels(dataset, config, plans, root)
    arch, args = architecture_args(config, len(channels), len(labels), root)
    fold_names = _fold_names(root, folds, CHECKPOINT_NAMES[checkpoint])
    members, mirror_axes, trainer, epochs = [], None, None, []
    for fold in fold_names:
        path = root / fold / CHECKPOINT_NAMES[checkpoint]
        ckpt = read_nnunet_checkpoint(path)
        _agree(ckpt, plans, cfg_name, path)
        model = _build(arch, args, root)
        try:
            _load_weights(model, network_state(ckpt["network_weights"], len(args["features"])), str(path))
        except ValueError as exc:
            raise ValueError(f"plans.json and {path} disagree: {str(exc)[:600]}; copy plans.json and the fold "
                             f"folders from the same training") from None
        members.append(model.eval())
        axes = ckpt.get("inference_allowed_mirroring_axes")
        mirror_axes = [] if axes is None else [int(a) for a in axes]
        trainer = ckpt.get("trainer_name", trainer)
        epochs.append(ckpt.get("current_epoch"))
    card = _card(root, plans, dataset, config, cfg_name, arch, args, labels, channels, fold_names, checkpoint,
                 mirror_axes, trainer, epochs, name)
    network = members[0] if len(members) == 1 else Ensemble(members)
    return NnUNetImport(save_checkpoint(output, network, card), card, tuple(fold_names))


def _build(arch: str, args: dict[str, Any], folder: Path):
    try:
        return build_model(arch, **args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{folder}: plans.json's architecture cannot be built: {str(exc)[:300]}") from None


def _card(root: Path, plans: dict, dataset: dict, config: dict, cfg_name: str, arch: str, args: dict,
          labels: list[Label], channels: list[InputChannel], folds: list[str], checkpoint: str,
          mirror_axes: list[int] | None, trainer: Any, epochs: list[Any], name: str | None) -> ModelCard:
    dims = args["spatial_dims"]
    spacing = [float(s) for s in config.get("spacing", [])]
    if dims == 2:  # 2D plans give the in-plane spacing; slices keep their own thickness at inference
        spacing = [float((plans.get("original_median_spacing_after_transp") or [1.0])[0]), *spacing]
    transpose = [int(t) for t in plans.get("transpose_forward", [0, 1, 2])]
    masks = [bool(m) for m in config.get("use_mask_for_norm", [False] * len(channels))]
    dataset_name = printable(str(plans.get("dataset_name") or root.parent.name))
    files = ["plans.json", "dataset.json", *(f"{f}/{CHECKPOINT_NAMES[checkpoint]}" for f in folds)]
    inference: dict[str, Any] = {"windows": "nnunet", "transpose": transpose, "crop_nonzero": True}
    if any(masks):
        inference["mask_normalization"] = masks
    if mirror_axes is not None:
        inference["mirror_axes"] = mirror_axes
    description = (f"Imported from the nnU-Net v2 results folder {printable(root.name)} ({cfg_name}, "
                   f"{', '.join(folds)}, checkpoint_{checkpoint}). MedSeg runs it as nnU-Net's predictor does (voxel "
                   f"order as stored, transpose {transpose}, crop to the non-zero box, window layout and Gaussian, "
                   f"mirroring axes {mirror_axes}); resampling to the model spacing, when an input needs it, is "
                   f"MedSeg's (linear) where nnU-Net uses third-order splines.")
    return ModelCard(
        name=name or f"{dataset_name}-{cfg_name}",
        summary=printable(str(dataset.get("description") or dataset.get("name") or
                              f"nnU-Net v2 model {dataset_name} ({cfg_name})"))[:2000],
        architecture=arch, architecture_args=args, inputs=tuple(channels), labels=tuple(labels),
        patch_size=tuple(int(p) for p in config.get("patch_size", [])), slice_axis=0,
        spacing=tuple(spacing[::-1]) if len(spacing) == 3 else None,
        training={"dataset": dataset_name, "license": printable(str(dataset.get("licence") or dataset.get("license")
                                                                    or "unknown")),
                  "nnunet": {"trainer": printable(str(trainer)), "plans": printable(str(plans.get("plans_name"))),
                             "configuration": cfg_name, "folds": folds, "checkpoint": checkpoint,
                             "epochs": [e if isinstance(e, int) else None for e in epochs],
                             "sha256": {f: _sha256(root / f) for f in files}}},
        ensemble=tuple(folds) if len(folds) > 1 else None, inference=inference, description=description)
