"""``medseg finetune``: learn from corrected cases, briefly and safely.

A corrections folder is a Decathlon-layout data set (``imagesTr/``, ``labelsTr/``, ``dataset.json``, and one
provenance JSON per case beside them) written by "Save as a training case". Fine-tuning starts from the parent
checkpoint's weights, trains a few steps at a low learning rate with the training augmentation, mixing in
replayed original training cases when they are given, and scores the network before and after on held-out
corrections and on the parent's validation split (predicted as training validation predicts). It refuses to
save when the parent's validation mean Dice drops by more than :data:`MAX_DROP` (unless forced); the new
checkpoint is written through :class:`medseg.outputs.OutputSet` only when everything succeeded, and its card
records the lineage (``training.fine_tune``).

Calibration: the parent's temperature and volume interval were fitted to the parent's probabilities and errors, so
the new card never copies them. With the parent's validation split at hand (``--replay``/``--replay-split``) they
are refitted on its validation cases through the engine (:func:`medseg.calibration_fit.fit_calibration`, as
``scripts/calibrate.py`` does; a label gets no interval when there are too few cases for a finite quantile), and
``training.fine_tune.calibration`` records the ECE in the band before/after the new temperature and what the
parent's temperature would have given. Without it the new card has no calibration: a warning is logged and the
lineage says why.

>>> result = finetune(FinetuneConfig(model="hippocampus-unet3d", corrections=Path("corr"), out=Path("ft.safetensors")))
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from safetensors.torch import save as safetensors_bytes

from .. import __version__
from ..calibration_fit import LabelledCase, fit_calibration
from ..card import ModelCard, finite_or_null
from ..catalog import resolve_checkpoint
from ..checkpoint import CARD_KEY, LoadedModel, load_checkpoint
from ..cli_export import checkpoint_sha256
from ..io import read_image
from ..nifti import check_nifti
from ..outputs import OutputSet
from ..text import printable
from .augment import Batch, PatchSampler
from .config import AugmentConfig
from .data import Case, DatasetInfo, RawCase, load_cases, read_dataset, read_raw, read_split, resample_raw
from .loop import Progress
from .losses import make_loss, supervised_loss
from .validate import validate

__all__ = [
    "MAX_DROP",
    "FinetuneConfig",
    "FinetuneRefused",
    "FinetuneResult",
    "add_finetune_parser",
    "check_drop",
    "cmd_finetune",
    "finetune",
    "finetuned_name",
    "summary_lines",
]

log = logging.getLogger(__name__)
MAX_DROP = 0.01  # the most the parent's validation mean Dice may fall before saving is refused
_GRID_TOLERANCE = 1e-3


class FinetuneRefused(ValueError):
    """The fine-tuned network scores worse than its parent on the parent's validation split."""


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
        model: the parent: a bundled model's name or a checkpoint path.
        corrections: the corrections folder (Decathlon layout).
        out: the ``.safetensors`` file to write.
        steps, lr, batch: optimisation (Adam, constant rate); with replay, half of each batch is replayed.
        replay, replay_split: the parent's training data set and its split JSON (``train`` cases are replayed,
            ``validation`` cases score before and after).
        holdout: corrections kept out of training to score on.
        force: save even when the validation Dice drops by more than :data:`MAX_DROP`.
        name: the new card's name (default ``<parent>-ft-YYYYMMDD``).
        seed, device, num_threads, augment: run control.
    """

    model: str
    corrections: Path
    out: Path
    steps: int = 50
    lr: float = 1e-4
    batch: int = 2
    replay: Path | None = None
    replay_split: Path | None = None
    holdout: int = 2
    force: bool = False
    name: str = ""
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.holdout < 0 or not (0 < self.lr < 1):
            raise ValueError(f"--steps and --batch must be >= 1, --holdout >= 0 and --lr in (0, 1); got steps "
                             f"{self.steps}, batch {self.batch}, holdout {self.holdout}, lr {self.lr}")
        if (self.replay is None) != (self.replay_split is None):
            raise ValueError("--replay and --replay-split go together: the parent's data set folder and its split "
                             "JSON (e.g. Resources/Models/hippocampus-unet3d.split.json)")
        if Path(self.out).suffix != ".safetensors":
            raise ValueError(f"--out {self.out} must end in .safetensors")


@dataclass(frozen=True)
class FinetuneResult:
    """What a run wrote and measured; `scores` holds ``{"holdout"|"validation": {"before": m, "after": m}}``."""

    out: Path
    card: ModelCard
    scores: dict[str, dict[str, Any]]
    used: list[str]
    skipped: list[str]


def finetuned_name(parent: str, day: dt.date) -> str:
    """``<parent>-ft-YYYYMMDD`` (a parent that is itself fine-tuned keeps its base name)."""
    base = parent.split("-ft-")[0] if "-ft-" in parent else parent
    return f"{base}-ft-{day:%Y%m%d}"


def check_drop(before: float, after: float, force: bool = False, limit: float = MAX_DROP) -> None:
    """Raise :class:`FinetuneRefused` when the validation mean Dice fell by more than `limit` (unless `force`)."""
    if before - after > limit and not force:
        raise FinetuneRefused(f"fine-tuning lowered the parent's validation mean Dice from {before:.4f} to "
                              f"{after:.4f} (more than {limit}); nothing was saved; use fewer --steps, a lower --lr, "
                              f"--replay the training cases, or --force to save anyway")


# ---- reading the corrections -------------------------------------------------------------------------------------

class _Corrupt(Exception):
    """A correction that cannot be read: skipped with a warning."""


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _same_grid(a: sitk.ImageFileReader, b: sitk.ImageFileReader) -> bool:
    if tuple(a.GetSize()[:3]) != tuple(b.GetSize()[:3]):
        return False
    n, m = a.GetDimension(), b.GetDimension()
    da, db = np.reshape(a.GetDirection(), (n, n))[:3, :3], np.reshape(b.GetDirection(), (m, m))[:3, :3]
    spacing = np.asarray(a.GetSpacing()[:3])
    return (np.allclose(spacing, b.GetSpacing()[:3], rtol=_GRID_TOLERANCE)
            and np.allclose(a.GetOrigin()[:3], b.GetOrigin()[:3], atol=_GRID_TOLERANCE * float(spacing.max()))
            and np.allclose(da, db, atol=_GRID_TOLERANCE))


def _check_labels(info: DatasetInfo, card: ModelCard) -> None:
    """The corrections' ``dataset.json`` labels must be the model's (same id, same name)."""
    model = {lb.id: lb.name for lb in card.labels}
    bad = [f"{i}={n!r}" for i, n in info.labels.items() if model.get(i, "").casefold() != n.casefold() and i != 0]
    if bad:
        raise ValueError(f"{info.root / 'dataset.json'}: labels {', '.join(bad)} are not labels of model "
                         f"{card.name} ({', '.join(f'{i}={n!r}' for i, n in model.items())}); correct only the "
                         f"model's labels, or fine-tune a model that has them")


def _read_correction(info: DatasetInfo, name: str, card: ModelCard) -> RawCase:
    files, label_path = info.cases[name]
    try:
        for path in (*files, label_path):
            if path.name.endswith((".nii", ".nii.gz")):
                check_nifti(path)  # a truncated NIfTI reads without an error in ITK
    except ValueError as exc:
        raise _Corrupt(f"{name}: {str(exc)[:200]}") from None
    try:
        image_header, label_header = _header(files[0]), _header(label_path)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    except RuntimeError as exc:
        raise _Corrupt(f"{name}: cannot read it ({str(exc).strip().splitlines()[-1][:160]})") from None
    if not _same_grid(image_header, label_header):
        raise ValueError(f"{label_path}: the correction lies on another grid than its image {files[0].name} (size "
                         f"{label_header.GetSize()} vs {image_header.GetSize()}, or spacing, origin or direction "
                         f"differ); save the corrected mask on its image's grid")
    extra = sorted(set(np.unique(label).tolist()) - {lb.id for lb in card.labels})
    if extra:
        raise ValueError(f"{label_path}: label values {extra[:10]} are not labels of model {card.name} (ids 0.."
                         f"{len(card.labels) - 1}); correct only the model's labels")
    try:
        raw = read_raw(info, [name], card.orientation)[0]
    except (RuntimeError, ValueError) as exc:
        raise _Corrupt(f"{name}: {str(exc).strip().splitlines()[-1][:200]}") from None
    return resample_raw(raw, card.spacing) if card.training.get("resampled_to_mm") else raw


def _corrections(folder: Path, card: ModelCard) -> tuple[DatasetInfo, dict[str, RawCase], list[str]]:
    """The readable corrections (name -> raw case) and the names of the skipped ones."""
    images = folder / "imagesTr"
    if not images.is_dir() or not any(p.is_file() and not p.name.startswith(".") for p in images.iterdir()):
        raise ValueError(f"--corrections {folder} holds no corrections (no images in {images}); save corrected "
                         f"cases into it first (\"Save as a training case\")")
    info = read_dataset(folder)
    _check_labels(info, card)
    info = dataclasses.replace(info, labels={lb.id: lb.name for lb in card.labels})
    good, skipped = {}, []
    for name in info.cases:
        try:
            good[name] = _read_correction(info, name, card)
        except _Corrupt as exc:
            log.warning("skipped correction %s", exc)
            skipped.append(name)
    if not good:
        raise ValueError(f"--corrections {folder}: none of its {len(info.cases)} case(s) could be read "
                         f"(e.g. {skipped[0]}); re-save them")
    return info, good, skipped


def _replay(config: FinetuneConfig, card: ModelCard) -> tuple[DatasetInfo | None, dict[str, list[str]]]:
    if config.replay is None:
        return None, {"train": [], "validation": []}
    info = read_dataset(config.replay)
    _check_labels(info, card)
    if not Path(config.replay_split).is_file():
        raise FileNotFoundError(f"--replay-split {config.replay_split} does not exist; give the parent's split JSON")
    return info, read_split(Path(config.replay_split), list(info.cases))


def _cases(info: DatasetInfo, names: list[str], card: ModelCard, raw: list[RawCase] | None = None) -> list[Case]:
    if not names:
        return []
    if raw is None:
        raw = read_raw(info, names, card.orientation)
        if card.training.get("resampled_to_mm"):
            raw = [resample_raw(r, card.spacing) for r in raw]
    return load_cases(info, names, [c.normalization for c in card.inputs], raw=raw)


# ---- training ----------------------------------------------------------------------------------------------------

def _split_holdout(names: list[str], k: int, seed: int) -> tuple[list[str], list[str]]:
    if k >= len(names):
        raise ValueError(f"--holdout {k} leaves no correction to train on ({len(names)} readable); lower --holdout")
    held = sorted(random.Random(seed).sample(sorted(names), k))
    return [n for n in names if n not in held], held


def _loss_name(card: ModelCard) -> str:
    name = (card.training.get("loss") or {}).get("name", "ce_dice")
    return name if name in ("dice", "ce_dice") else "ce_dice"


def _batch(samplers: list[PatchSampler], batch: int) -> Batch:
    sizes = [batch - batch // 2, batch // 2] if len(samplers) == 2 else [batch]
    parts = [s.sample(n) for s, n in zip(samplers, sizes, strict=True) if n]
    return Batch(torch.cat([p.image for p in parts]), torch.cat([p.label for p in parts]))


def _train(model, samplers: list[PatchSampler], config: FinetuneConfig, card: ModelCard, device: torch.device,
           progress: Callable[[Progress], None]) -> list[float]:
    """`config.steps` Adam steps; returns the losses."""
    deep = bool((card.training.get("loss") or {}).get("deep_supervision")) and hasattr(model, "forward_heads")
    weight_decay = float((card.training.get("optimizer") or {}).get("weight_decay", 3e-5))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=weight_decay)
    loss_fn = make_loss(_loss_name(card))
    model.train()
    losses, started, sec = [], time.perf_counter(), 0.0
    for step in range(1, config.steps + 1):
        t0 = time.perf_counter()
        batch = _batch(samplers, config.batch)
        x, y = batch.image.to(device), batch.label.to(device)
        loss = supervised_loss(loss_fn, model.forward_heads(x) if deep else model(x), y, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at step {step}; lower --lr; nothing was saved")
        sec = time.perf_counter() - t0 if not sec else 0.9 * sec + 0.1 * (time.perf_counter() - t0)
        progress(Progress(1, 1, step, config.steps, sum(losses) / len(losses), config.lr, sec,
                          time.perf_counter() - started, (config.steps - step) * sec))
    model.eval()
    return losses


def _score(model, cases: list[Case], card: ModelCard, device: torch.device) -> dict[str, Any] | None:
    if not cases:
        return None
    values = validate(model, cases, {lb.id: lb.name for lb in card.labels}, device, tuple(card.patch_size))
    return {**values, "cases": len(cases)}


# ---- calibration -------------------------------------------------------------------------------------------------

def _labelled(info: DatasetInfo, name: str) -> LabelledCase:
    files, label_path = info.cases[name]

    def read():
        channels = [read_image(f) for f in files]
        image = channels[0][0] if len(channels) == 1 else np.stack([c[0] for c in channels])
        return image, channels[0][1], read_image(label_path)[0]

    return LabelledCase(name, read)


def _recalibrate(loaded: LoadedModel, info: DatasetInfo | None, validation: list[str], config: FinetuneConfig,
                 now: dt.datetime) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The new card's calibration refitted on the parent's validation cases, and what the lineage says of it;
    (None, why) without them: a parent's calibration is never carried over stale."""
    parent = loaded.card.calibration or {}
    was = {k: parent[k] for k in ("temperature", "ece_before", "ece_after") if k in parent}
    if info is None or not validation:
        what = "the parent's temperature and volume interval were dropped" if parent else "the parent had none"
        message = (f"the fine-tuned model has no calibration: {what}, and no validation split is at hand to refit "
                   f"it on (give --replay and --replay-split, or run scripts/calibrate.py on the new checkpoint)")
        if parent:
            log.warning("%s", message)
        return None, {"refitted": False, "parent": was, "note": message}
    log.info("refitting the temperature and the volume interval on %d validation case(s)", len(validation))
    fit = fit_calibration(loaded, [_labelled(info, n) for n in validation], device=config.device,
                          fitted_on=f"{len(validation)} validation cases of {Path(config.replay_split).name}, after "
                                    f"fine-tuning ({now.date()})",
                          compare_temperature=float(parent.get("temperature", 1.0)),
                          report=lambda line: log.info("%s", line.strip()))
    cal, sample = fit["card_calibration"], fit["temperature"]["in_sample"]
    record = {"refitted": True, "parent": was, "cases": len(validation), "temperature": cal["temperature"],
              "ece_before": cal["ece_before"], "ece_after": cal["ece_after"],
              "ece_with_parent_temperature": round(sample["compared"]["ece"], 5),
              "volume_interval": (cal.get("volume_interval") or {}).get("method"), "seconds": fit["seconds"]}
    if "notes" in cal:
        record["note"] = cal["notes"]
    return cal, record


# ---- the card and the file ---------------------------------------------------------------------------------------

def _lineage(config: FinetuneConfig, parent: Path, card: ModelCard, used: list[str], held: list[str],
             skipped: list[str], replayed: int, scores: dict[str, Any], losses: list[float], seconds: float,
             now: dt.datetime, calibration: dict[str, Any]) -> dict[str, Any]:
    return {
        "parent": {"name": card.name, "file": parent.name, "sha256": checkpoint_sha256(parent)},
        "date": now.isoformat(timespec="seconds"),
        "corrections": {"folder": config.corrections.name, "used": used, "held_out": held, "skipped": skipped},
        "replay": {"dataset": config.replay.name if config.replay else None,
                   "split": Path(config.replay_split).name if config.replay_split else None, "train_cases": replayed},
        "settings": {"steps": config.steps, "lr": config.lr, "batch": config.batch, "optimizer": "adam",
                     "schedule": "constant", "loss": _loss_name(card), "holdout": config.holdout, "seed": config.seed,
                     "augmentation": dataclasses.asdict(config.augment), "forced": config.force},
        "scores": scores, "scores_postprocessing": "none (the network's arg-max, as training validation)",
        "final_loss": losses[-1], "wall_time_s": round(seconds, 1),
        "trainer": f"medseg finetune {__version__}",
        "calibration": calibration,
    }


def _new_card(card: ModelCard, config: FinetuneConfig, lineage: dict[str, Any], now: dt.datetime,
              calibration: dict[str, Any] | None = None) -> ModelCard:
    name = config.name or finetuned_name(card.name, now.date())
    val = lineage["scores"].get("validation")
    metrics = {**{k: v for k, v in val["after"].items() if k != "cases"}, "validation_cases": val["after"]["cases"],
               "split": lineage["replay"]["split"]} if val else {}
    summary = f"{card.summary} Fine-tuned on {len(lineage['corrections']['used'])} corrected case(s)."
    return dataclasses.replace(card, name=name, summary=summary[:500], calibration=calibration,
                               training=finite_or_null({**card.training, "fine_tune": lineage}),
                               metrics=finite_or_null(metrics), engine_version=__version__)


def _checkpoint_bytes(model, card: ModelCard) -> bytes:
    ModelCard.from_dict(card.to_dict(), source=f"card {card.name!r}")  # validates before writing anything
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return safetensors_bytes(tensors, metadata={CARD_KEY: card.to_json(), "format": "pt"})


# ---- the run -----------------------------------------------------------------------------------------------------

def finetune(config: FinetuneConfig, progress: Callable[[Progress], None] | None = None,
             now: dt.datetime | None = None) -> FinetuneResult:
    """Fine-tune the parent on the corrections; write the new checkpoint (all or nothing).

    Raises:
        FileNotFoundError / ValueError: bad input, with the fix in the message (a corrupt case is only skipped).
        FinetuneRefused: the parent's validation mean Dice fell by more than :data:`MAX_DROP` (without force).
        OutputError: the checkpoint could not be written (folder missing or read-only, disk full).
    """
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        with OutputSet() as outputs:
            outputs.reserve(config.out)  # an unwritable folder fails before any work; any failure writes nothing
            return _run(config, outputs, progress or (lambda p: None), now or dt.datetime.now(dt.UTC))
    finally:
        torch.set_num_threads(threads)


def _run(config: FinetuneConfig, outputs: OutputSet, progress: Callable[[Progress], None],
         now: dt.datetime) -> FinetuneResult:
    started = time.perf_counter()
    parent = resolve_checkpoint(config.model)
    if Path(config.out).resolve() == parent.resolve():
        raise ValueError(f"--out {config.out} is the parent checkpoint; write the fine-tuned model to a new file")
    device = torch.device(config.device)
    loaded = load_checkpoint(parent, device)
    card, model = loaded.card, loaded.model
    info, raw, skipped = _corrections(Path(config.corrections), card)
    train_names, held = _split_holdout(list(raw), config.holdout, config.seed)
    corr = {n: c for n, c in zip(raw, _cases(info, list(raw), card, list(raw.values())), strict=True)}
    replay_info, split = _replay(config, card)
    replayed, val_cases = _cases(replay_info, split["train"], card), _cases(replay_info, split["validation"], card)
    held_cases = [corr[n] for n in held]
    before = {"holdout": _score(model, held_cases, card, device), "validation": _score(model, val_cases, card, device)}
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    mri = any(c.modality == "MR" for c in card.inputs)
    patch = tuple(card.patch_size)
    samplers = [PatchSampler([corr[n] for n in train_names], patch, 1 / 3, config.augment, generator, mri)]
    if replayed:
        samplers.append(PatchSampler(replayed, patch, 1 / 3, config.augment, generator, mri))
    losses = _train(model, samplers, config, card, device, progress)
    after = {"holdout": _score(model, held_cases, card, device), "validation": _score(model, val_cases, card, device)}
    scores = {k: {"before": before[k], "after": after[k]} for k in before if before[k] is not None}
    if "validation" in scores:
        check_drop(before["validation"]["mean_dice"], after["validation"]["mean_dice"], config.force)
    calibration, record = _recalibrate(LoadedModel(model, card, parent), replay_info, split["validation"],
                                       config, now)
    lineage = _lineage(config, parent, card, train_names, held, skipped, len(replayed), scores, losses,
                       time.perf_counter() - started, now, record)
    new_card = _new_card(card, config, lineage, now, calibration)
    outputs.write_bytes(config.out, _checkpoint_bytes(model, new_card))
    return FinetuneResult(Path(config.out), new_card, scores, train_names, skipped)


def summary_lines(result: FinetuneResult) -> list[str]:
    """Before/after mean Dice lines for the command line."""
    lines = []
    for kind, s in result.scores.items():
        lines.append(f"{kind} ({s['before']['cases']} cases): mean Dice {s['before']['mean_dice']:.4f} -> "
                     f"{s['after']['mean_dice']:.4f}")
    record = (result.card.training.get("fine_tune") or {}).get("calibration") or {}
    if record.get("refitted"):
        lines.append(f"calibration refitted on {record['cases']} validation cases: T = {record['temperature']}, band "
                     f"ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f} (with the parent's T: "
                     f"{record['ece_with_parent_temperature']:.4f})")
    if record.get("note"):
        lines.append(f"calibration: {record['note']}")
    return lines


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``finetune`` subcommand (``func=cmd_finetune``) on `subparsers`; returns its parser."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model on corrected cases",
        description="Fine-tune a model briefly on a corrections folder (Decathlon layout, written by \"Save as a "
                    "training case\"), mixing in the parent's training cases with --replay, and write a new "
                    "checkpoint whose card records its lineage and its Dice before and after on held-out "
                    "corrections and on the parent's validation split. Refuses to save when that validation mean "
                    f"Dice drops by more than {MAX_DROP} (unless --force).")
    p.add_argument("--model", required=True, help="the parent: a bundled model's name or a checkpoint path")
    p.add_argument("--corrections", required=True, type=Path, help="corrections folder (imagesTr/, labelsTr/, "
                   "dataset.json)")
    p.add_argument("--out", required=True, type=Path, help="the new .safetensors file")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps (50)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate, constant (1e-4)")
    p.add_argument("--batch", type=int, default=2, help="patches per step; half replayed with --replay (2)")
    p.add_argument("--replay", type=Path, default=None, help="the parent's training data set folder")
    p.add_argument("--replay-split", type=Path, default=None, help="the parent's split JSON (train/validation)")
    p.add_argument("--holdout", type=int, default=2, help="corrections held out for evaluation (2)")
    p.add_argument("--name", default="", help="the new model's name (default <parent>-ft-YYYYMMDD)")
    p.add_argument("--force", action="store_true", help="save even when the validation Dice drops")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out, sampling and augmentation (0)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=cmd_finetune)
    return p


def cmd_finetune(args: argparse.Namespace) -> int:
    """Run ``medseg finetune``; prints the scores before and after and the file written. Returns 0."""
    from .cli import ProgressPrinter

    config = FinetuneConfig(model=args.model, corrections=args.corrections, out=args.out, steps=args.steps,
                            lr=args.lr, batch=args.batch, replay=args.replay, replay_split=args.replay_split,
                            holdout=args.holdout, force=args.force, name=args.name, seed=args.seed,
                            device=args.device, num_threads=args.threads)
    result = finetune(config, ProgressPrinter())
    for line in summary_lines(result):
        print(line)
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable correction(s): {', '.join(result.skipped)}")
    print(f"wrote {result.out} ({printable(result.card.name)}, {len(result.used)} corrections)")
    return 0
