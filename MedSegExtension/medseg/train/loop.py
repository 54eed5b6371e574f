"""The training loop: set up a run folder, train epochs, validate, checkpoint, resume.

A run folder holds ``config.json``, ``split.json``, ``best.safetensors`` (written whenever the validation
mean Dice improves), ``last.safetensors`` with ``last_state.safetensors``/``last_state.json`` (to resume),
``log.csv`` and ``curves.png``. Both checkpoints carry a complete model card.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .. import __version__
from ..card import Normalization
from ..checkpoint import save_checkpoint
from ..domain import describe_inputs
from ..models import ARCHITECTURES, SegmentationNetwork, build_model
from .augment import PatchSampler
from .config import TrainConfig
from .data import (
    Case,
    DatasetInfo,
    dataset_orientation,
    fit_normalization,
    load_cases,
    make_split,
    read_dataset,
    read_raw,
    read_split,
    resample_raw,
)
from .data import write_split as _write_split
from .losses import LossFn, boundary_weight_map, make_loss, supervised_loss
from .report import build_card, hardware, plot_curves, write_csv
from .state import STATE_JSON, TrainState, load_state, save_state
from .validate import validate

__all__ = ["Progress", "TrainResult", "learning_rate", "train"]

log = logging.getLogger(__name__)
SPLIT_FILE = "split.json"
_RESUMABLE_CHANGES = {"data", "out", "resume", "epochs", "device", "num_threads", "val_every", "summary",
                      "description"}


@dataclass(frozen=True)
class Progress:
    """One progress report: sent after every training step (``validation`` None) and after each validation."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    sec_per_step: float
    elapsed_s: float
    eta_s: float
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run left its files, and its final state."""

    run: Path
    best: Path
    last: Path
    state: TrainState


@dataclass
class _Run:
    """Everything a run holds while it trains (built by :func:`_setup`)."""

    config: TrainConfig
    info: DatasetInfo
    split: dict[str, list[str]]
    norms: list[Normalization]
    spacing: tuple[float, float, float]
    train_cases: list[Case]
    val_cases: list[Case]
    model: SegmentationNetwork
    optimizer: torch.optim.Optimizer
    sampler: PatchSampler
    generator: torch.Generator
    loss: LossFn
    device: torch.device
    state: TrainState
    steps: int
    val_seconds: float = 0.0
    orientation: str | None = None  # the voxel orientation every case was brought to
    input_domain: dict[str, Any] | None = None  # the training inputs' sizes and intensities (medseg.domain)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The rate of (1-based) `epoch`: poly ``lr (1 - (e-1)/E)^0.9``, step ``lr gamma^((e-1) // size)``."""
    if config.schedule == "poly":
        return config.lr * (1 - (epoch - 1) / config.epochs) ** 0.9
    if config.schedule == "step":
        size = config.step_size or max(1, config.epochs // 3)
        return config.lr * config.step_gamma ** ((epoch - 1) // size)
    return config.lr


def _config_json(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _prepare_folder(config: TrainConfig) -> None:
    """Create the run folder; refuse to overwrite a run unless resuming; check a resumed run's options."""
    config.out.mkdir(parents=True, exist_ok=True)
    saved = config.out / "config.json"
    if not config.resume and (config.out / STATE_JSON).exists():
        raise ValueError(f"{config.out} already holds a run; pass --resume to continue it or choose a new --out")
    if config.resume and saved.is_file():
        old, new = json.loads(saved.read_text(encoding="utf-8")), _config_json(config)
        changed = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
        if changed:
            raise ValueError(f"--resume with options that differ from {saved}: {changed}; use the run's options "
                             f"(only {sorted(_RESUMABLE_CHANGES)} may change) or a new --out")
    saved.write_text(json.dumps(_config_json(config), indent=1) + "\n", encoding="utf-8")


def _split(config: TrainConfig, info: DatasetInfo) -> dict[str, list[str]]:
    path = config.out / SPLIT_FILE
    names = list(info.cases)
    if path.is_file():
        split = read_split(path, names)
        missing = sorted(set(config.val_include) - set(split["validation"]))
        if missing:
            raise ValueError(f"{path} does not hold the --val-include cases {missing}; use a new --out folder")
        return split
    split = make_split(names, config.val_fraction, config.seed, config.val_include)
    _write_split(path, split, config.seed, config.val_fraction)
    return split


def _network(config: TrainConfig, info: DatasetInfo) -> SegmentationNetwork:
    """Build the network from the options; the patch must suit its size divisor."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}; valid names: {', '.join(ARCHITECTURES)}")
    accepted = inspect.signature(ARCHITECTURES[config.arch]).parameters
    kwargs: dict[str, Any] = {"spatial_dims": 3, "in_channels": len(info.channels), "num_classes": len(info.labels),
                              "width": config.width, "norm": config.norm}
    if config.depth is not None and "depth" in accepted:
        kwargs["depth"] = config.depth
    kwargs.update(config.arch_args)
    model = build_model(config.arch, **kwargs)
    bad = [p for p in config.patch if p % model.size_divisor]
    if bad:
        raise ValueError(f"patch {config.patch} must be a multiple of {model.size_divisor} (the size divisor of "
                         f"{config.arch} with these arguments) on every axis; e.g. "
                         f"{tuple(-(-p // model.size_divisor) * model.size_divisor for p in config.patch)}")
    return model


def _optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _cache(config: TrainConfig, info: DatasetInfo, split: dict[str, list[str]]):
    """Read every case once (in the data set's orientation); fit the normalisations on the training cases; cache
    both splits."""
    started = time.perf_counter()
    orientation = dataset_orientation(info)
    raw_train = read_raw(info, split["train"], orientation)
    raw_val = read_raw(info, split["validation"], orientation)
    if config.spacing is not None:
        raw_train = [resample_raw(case, config.spacing) for case in raw_train]
        raw_val = [resample_raw(case, config.spacing) for case in raw_val]
    kinds = [config.intensity or ("ct" if modality == "CT" else "zscore") for _, modality in info.channels]
    norms = [fit_normalization(kind, [im[c] for im, _, _ in raw_train], [lb for _, lb, _ in raw_train],
                               config.percentiles, config.ct_window) for c, kind in enumerate(kinds)]
    weight_fn = None
    if config.loss == "boundary_ce":
        def weight_fn(label):
            return boundary_weight_map(label, len(info.labels), config.w0, config.sigma)
    train_cases = load_cases(info, split["train"], norms, weight_fn, raw=raw_train)
    val_cases = load_cases(info, split["validation"], norms, raw=raw_val)
    spacings = torch.tensor([c.spacing for c in train_cases])
    spacing = tuple(float(s) for s in spacings.median(dim=0).values)
    log.info("cached %d training and %d validation cases in %.1f s", len(train_cases), len(val_cases),
             time.perf_counter() - started)
    return norms, spacing, train_cases, val_cases, orientation


def _setup(config: TrainConfig) -> _Run:
    """Everything for a run: folder, data, split, cache, network, optimizer, sampler; resumed if asked."""
    info = read_dataset(config.data)
    _prepare_folder(config)
    split = _split(config, info)
    norms, spacing, train_cases, val_cases, orientation = _cache(config, info, split)
    domain = describe_inputs([info.cases[name][0] for name in split["train"]], [name for name, _ in info.channels])
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = _network(config, info).to(device)
    optimizer = _optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed + 1)
    mri = any(modality == "MR" for _, modality in info.channels)
    sampler = PatchSampler(train_cases, config.patch, config.fg_fraction, config.augment, generator, mri)
    steps = config.steps_per_epoch or max(1, len(train_cases) // config.batch)
    state = TrainState()
    if config.resume:
        model.load_state_dict(load_file(str(config.out / "last.safetensors"), device=str(device)), strict=True)
        state = load_state(config.out, optimizer, {"sampler": generator})
        log.info("resumed %s at epoch %d (best mean Dice %.4f at epoch %d)", config.out, state.epoch,
                 state.best_dice, state.best_epoch)
    state.sessions.append({"start_epoch": state.epoch + 1, "epochs_planned": config.epochs})
    return _Run(config, info, split, norms, spacing, train_cases, val_cases, model, optimizer, sampler, generator,
                make_loss(config.loss), device, state, steps, orientation=orientation, input_domain=domain)


def _deep_supervised(run: _Run) -> bool:
    return run.config.deep_supervision and hasattr(run.model, "forward_heads") and \
        getattr(run.model, "deep_supervision", True)


def _step(run: _Run, scaler: torch.amp.GradScaler) -> float:
    """One optimisation step on a fresh batch; returns its loss."""
    batch = run.sampler.sample(run.config.batch)
    x, y = batch.image.to(run.device), batch.label.to(run.device)
    w = batch.weight.to(run.device) if batch.weight is not None else None
    with torch.autocast("cuda", enabled=run.device.type == "cuda"):
        out = run.model.forward_heads(x) if _deep_supervised(run) else run.model(x)
        loss = supervised_loss(run.loss, out, y, w)
    run.optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 12.0)
    scaler.step(run.optimizer)
    scaler.update()
    return float(loss.detach())


def _eta(run: _Run, epoch: int, step: int, sec_per_step: float) -> float:
    cfg = run.config
    steps_left = (cfg.epochs - epoch) * run.steps + run.steps - step
    vals_left = sum(1 for e in range(epoch, cfg.epochs + 1) if e % cfg.val_every == 0 or e == cfg.epochs)
    return steps_left * sec_per_step + vals_left * run.val_seconds


def _train_epoch(run: _Run, epoch: int, lr: float, report: Callable[[Progress], None]) -> float:
    """Train one epoch of ``run.steps`` steps; returns the mean loss."""
    run.model.train()
    scaler = torch.amp.GradScaler("cuda", enabled=run.device.type == "cuda")
    losses: list[float] = []
    started = time.perf_counter()
    sec_per_step = 0.0
    for step in range(1, run.steps + 1):
        t0 = time.perf_counter()
        losses.append(_step(run, scaler))
        dt = time.perf_counter() - t0
        sec_per_step = dt if not sec_per_step else 0.9 * sec_per_step + 0.1 * dt
        elapsed = run.state.elapsed_s + time.perf_counter() - started
        report(Progress(epoch, run.config.epochs, step, run.steps, sum(losses) / len(losses), lr, sec_per_step,
                        elapsed, _eta(run, epoch, step, sec_per_step)))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at epoch {epoch} step {step}; lower --lr or "
                                     f"check the data (resume from the last good epoch with --resume)")
    return sum(losses) / len(losses)


def _training_record(run: _Run, epoch: int) -> dict[str, Any]:
    """The card's ``training`` entry: data, split, schedule, time, hardware, loss, optimiser."""
    cfg = run.config
    optimiser = {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": cfg.schedule}
    if cfg.optimizer == "sgd":
        optimiser.update(momentum=cfg.momentum, nesterov=True)
    if cfg.schedule == "step":
        optimiser.update(step_size=cfg.step_size or max(1, cfg.epochs // 3), step_gamma=cfg.step_gamma)
    loss: dict[str, Any] = {"name": cfg.loss, "deep_supervision": _deep_supervised(run)}
    if cfg.loss == "boundary_ce":
        loss.update(w0=cfg.w0, sigma_px=cfg.sigma)
    hours, rest = divmod(int(run.state.elapsed_s), 3600)
    return {
        "dataset": run.info.name, "license": run.info.license, "source": run.info.source,
        "split": {"file": SPLIT_FILE, "train_cases": len(run.split["train"]),
                  "validation_cases": len(run.split["validation"]), "seed": cfg.seed,
                  "validation_include": list(cfg.val_include)},
        "epochs": epoch, "epochs_planned": cfg.epochs, "steps_per_epoch": run.steps, "batch_size": cfg.batch,
        "patch_size": list(cfg.patch), "foreground_fraction": round(cfg.fg_fraction, 4),
        "resampled_to_mm": list(cfg.spacing) if cfg.spacing else None,
        "wall_time_s": round(run.state.elapsed_s, 1), "wall_time": f"{hours}:{rest // 60:02d}:{rest % 60:02d}",
        "hardware": hardware(run.device), "loss": loss, "optimizer": optimiser,
        "augmentation": dataclasses.asdict(cfg.augment), "seed": cfg.seed, "trainer": f"medseg train {__version__}",
        "sessions": run.state.sessions,
    }


def _metrics(values: dict[str, Any], epoch: int, run: _Run) -> dict[str, Any]:
    if not values:
        return {}
    return {**values, "epoch": epoch, "best_epoch": run.state.best_epoch,
            "validation_cases": len(run.val_cases), "split": SPLIT_FILE}


def _save(run: _Run, name: str, epoch: int, metrics: dict[str, Any]) -> Path:
    card = build_card(run.config, run.info, run.model, run.norms, run.spacing, _training_record(run, epoch), metrics,
                      orientation=run.orientation, input_domain=run.input_domain)
    return save_checkpoint(run.config.out / name, run.model, card)


def _validate(run: _Run, epoch: int, report: Callable[[Progress], None], row: dict[str, Any]) -> None:
    started = time.perf_counter()
    values = validate(run.model, run.val_cases, run.info.labels, run.device, run.config.patch)
    run.val_seconds = time.perf_counter() - started
    row.update({f"val_dice_{k}": v for k, v in values["dice"].items()})
    row.update(val_mean_dice=values["mean_dice"], val_mean_iou=values["mean_iou"], val_time_s=run.val_seconds)
    row["_metrics"] = values
    if values["mean_dice"] > run.state.best_dice:
        run.state.best_dice, run.state.best_epoch, run.state.best_metrics = values["mean_dice"], epoch, values
        _save(run, "best.safetensors", epoch, _metrics(values, epoch, run))
    report(Progress(epoch, run.config.epochs, run.steps, run.steps, row["train_loss"], row["lr"], 0.0,
                    run.state.elapsed_s, 0.0, {**values, "best_dice": run.state.best_dice,
                                               "best_epoch": run.state.best_epoch, "seconds": run.val_seconds}))


def _finish_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Record the epoch; write last.safetensors, the state files, the CSV and the curves."""
    latest = next((r for r in reversed([*run.state.history, row]) if "_metrics" in r), None)
    metrics = _metrics(latest["_metrics"], latest["epoch"], run) if latest else {}
    run.state.history.append(row)
    run.state.epoch = epoch
    _save(run, "last.safetensors", epoch, metrics)
    save_state(run.config.out, run.state, run.optimizer, {"sampler": run.generator})
    names = [run.info.labels[c] for c in sorted(run.info.labels) if c != 0]
    write_csv(run.config.out / "log.csv", run.state.history, names)
    plot_curves(run.config.out / "curves.png", run.state.history, names)


def _epoch(run: _Run, epoch: int, report: Callable[[Progress], None]) -> None:
    """Train, maybe validate, and record one epoch."""
    config = run.config
    started = time.perf_counter()
    lr = learning_rate(config, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    row: dict[str, Any] = {"epoch": epoch, "train_loss": _train_epoch(run, epoch, lr, report), "lr": lr}
    run.state.elapsed_s += time.perf_counter() - started
    if epoch % config.val_every == 0 or epoch == config.epochs:
        _validate(run, epoch, report, row)
        run.state.elapsed_s += run.val_seconds
    row.update(epoch_time_s=time.perf_counter() - started, elapsed_s=run.state.elapsed_s)
    _finish_epoch(run, epoch, row)


def train(config: TrainConfig, progress: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train (or resume) a run as `config` says; see the module docstring for what it writes.

    Args:
        config: the run's options.
        progress: called after every step and every validation (e.g. to print a progress line).

    Raises:
        FileNotFoundError / ValueError: a bad data set or run folder, with the fix in the message.
    """
    threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        run = _setup(config)
        for epoch in range(run.state.epoch + 1, config.epochs + 1):
            _epoch(run, epoch, progress or (lambda p: None))
    finally:
        torch.set_num_threads(threads)
    out = config.out
    return TrainResult(out, out / "best.safetensors", out / "last.safetensors", run.state)
