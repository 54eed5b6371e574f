"""``medseg train``: the argument parser and the command, to be wired into ``medseg/cli.py``.

>>> sub = parser.add_subparsers(dest="command")
>>> add_train_parser(sub)        # registers "train" with func=cmd_train
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TextIO

from ..models import ARCHITECTURES
from .config import LOSSES, OPTIMIZERS, SCHEDULES, AugmentConfig, TrainConfig
from .loop import Progress, train

__all__ = ["ProgressPrinter", "add_train_parser", "cmd_train", "config_from_args"]


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressPrinter:
    """Prints progress: a refreshed line on a terminal, else a line per epoch and per validation.

    Args:
        stream: where to write (default ``sys.stderr``).
        every_s: on a non-terminal, also print mid-epoch lines at most this often.
    """

    def __init__(self, stream: TextIO | None = None, every_s: float = 60.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self, p: Progress) -> None:
        if p.validation is not None:
            v = p.validation
            dice = " ".join(f"{k}={x:.4f}" for k, x in v["dice"].items())
            line = (f"validation epoch {p.epoch}: dice {dice} mean={v['mean_dice']:.4f} iou={v['mean_iou']:.4f} "
                    f"({v['seconds']:.1f} s) best={v['best_dice']:.4f}@{v['best_epoch']}")
            self._write(line, newline=True)
            return
        line = (f"epoch {p.epoch}/{p.epochs} step {p.step}/{p.steps} loss {p.loss:.4f} lr {p.lr:.2e} "
                f"{p.sec_per_step:.2f} s/step elapsed {_clock(p.elapsed_s)} ETA {_clock(p.eta_s)}")
        now = time.monotonic()
        if self.tty:
            self._write(line, newline=p.step == p.steps)
        elif p.step == p.steps or now - self._last >= self.every_s:
            self._last = now
            self._write(line, newline=True)

    def _write(self, line: str, newline: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if newline else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand (``func=cmd_train``) on `subparsers`; returns its parser."""
    p = subparsers.add_parser(
        "train", help="train a network on a Decathlon-layout data set",
        description="Train a segmentation network on a data set in the Medical Segmentation Decathlon layout "
                    "(imagesTr/, labelsTr/, dataset.json). Writes best.safetensors and last.safetensors (with "
                    "complete model cards), split.json, log.csv and curves.png into --out; --resume continues.")
    g = p.add_argument_group("data and run")
    g.add_argument("--data", required=True, type=Path, help="data set folder (dataset.json, imagesTr/, labelsTr/)")
    g.add_argument("--out", required=True, type=Path, help="run folder to write (e.g. runs/hippocampus-unet3d)")
    g.add_argument("--name", default="model", help="model name for the card (default: model)")
    g.add_argument("--summary", default="", help="one-sentence card summary (default: generated)")
    g.add_argument("--val-fraction", type=float, default=0.2, help="validation share of the cases (0.2)")
    g.add_argument("--val-include", nargs="*", default=[], metavar="CASE",
                   help="cases that must be validation cases (e.g. hippocampus_001 hippocampus_003)")
    g.add_argument("--val-every", type=int, default=5, help="validate every N epochs (5)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.safetensors")
    g.add_argument("--seed", type=int, default=0, help="seed of the split, weights and sampling (0)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g = p.add_argument_group("network")
    g.add_argument("--arch", default="unet", choices=list(ARCHITECTURES), help="architecture (unet)")
    g.add_argument("--width", type=float, default=0.25, help="channel multiplier (0.25)")
    g.add_argument("--depth", type=int, default=4, help="levels, for architectures that take it (4)")
    g.add_argument("--norm", default="instance", choices=["batch", "instance", "group", "none"],
                   help="normalisation layers (instance)")
    g.add_argument("--no-deep-supervision", action="store_true", help="train only the last UNet++ head")
    g.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="train at this spacing in mm (x y z), e.g. coarser than the data's to save compute; the "
                        "card records it and inference resamples to it and back (default: the data's own)")
    g.add_argument("--intensity", choices=["zscore", "ct", "minmax", "none"], default=None,
                   help="intensity normalisation (default: ct for CT, else zscore with 0.5/99.5 percentile clip)")
    g.add_argument("--ct-window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="fixed 'ct' clipping window in HU, e.g. -125 275 (default: the foreground's 0.5/99.5 "
                        "percentiles); the card records it and inference clips raw CT to it")
    g = p.add_argument_group("optimisation")
    g.add_argument("--patch", type=int, nargs=3, default=[40, 56, 40], metavar=("Z", "Y", "X"),
                   help="patch size in voxels, multiples of the size divisor (40 56 40)")
    g.add_argument("--epochs", type=int, default=100, help="epochs (100)")
    g.add_argument("--steps-per-epoch", type=int, default=0, help="steps per epoch (0: training cases // batch)")
    g.add_argument("--batch", type=int, default=2, help="patches per step (2)")
    g.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (1e-3)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="adam, or sgd (momentum 0.99, Nesterov)")
    g.add_argument("--momentum", type=float, default=0.99, help="SGD momentum (0.99)")
    g.add_argument("--weight-decay", type=float, default=3e-5, help="weight decay (3e-5)")
    g.add_argument("--schedule", choices=SCHEDULES, default="poly", help="poly (0.9), step, or constant")
    g.add_argument("--step-size", type=int, default=0, help="step schedule: epochs per step (0: epochs // 3)")
    g.add_argument("--loss", choices=LOSSES, default="ce_dice", help="dice, ce_dice or boundary_ce (ce_dice)")
    g.add_argument("--fg-fraction", type=float, default=1 / 3, help="share of foreground-centred patches (1/3)")
    g.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    g.add_argument("--mirror-axes", type=int, nargs="*", choices=(0, 1, 2), default=None, metavar="AXIS",
                   help="array axes (k j i of the training orientation) mirrored in augmentation, each with "
                        "probability 0.5 (default: all three); give none (--mirror-axes alone) for anatomy with a "
                        "left and a right label, such as kidneys: the card then restricts mirroring TTA to these axes")
    p.set_defaults(func=cmd_train)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``medseg train`` arguments."""
    return TrainConfig(
        data=args.data, out=args.out, name=args.name, summary=args.summary, arch=args.arch, width=args.width,
        depth=args.depth, norm=None if args.norm == "none" else args.norm, intensity=args.intensity,
        spacing=tuple(args.spacing) if args.spacing else None,
        ct_window=tuple(args.ct_window) if args.ct_window else None,
        patch=tuple(args.patch), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch=args.batch,
        lr=args.lr, optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        schedule=args.schedule, step_size=args.step_size, loss=args.loss,
        deep_supervision=not args.no_deep_supervision, fg_fraction=args.fg_fraction,
        val_fraction=args.val_fraction, val_include=tuple(args.val_include), val_every=args.val_every,
        seed=args.seed, device=args.device, resume=args.resume, num_threads=args.threads,
        augment=dataclasses.replace(AugmentConfig(), enabled=not args.no_augment,
                                    **({} if args.mirror_axes is None else {"flip_axes": tuple(args.mirror_axes)})),
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``medseg train``; prints the best validation scores and the checkpoint paths. Returns 0."""
    result = train(config_from_args(args), ProgressPrinter())
    s = result.state
    dice = ", ".join(f"{k} {v:.4f}" for k, v in s.best_metrics.get("dice", {}).items())
    print(f"best validation mean Dice {s.best_dice:.4f} at epoch {s.best_epoch} ({dice})")
    print(f"wrote {result.best} and {result.last} ({s.epoch} epochs, {s.elapsed_s / 60:.1f} min)")
    return 0
