"""What a run writes for people: the CSV log, the learning-curve PNG, the model card, the hardware record."""

from __future__ import annotations

import csv
import logging
import os
import platform
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..card import InputChannel, Label, ModelCard, Normalization, finite_or_null
from ..models import SegmentationNetwork
from .config import TrainConfig
from .data import DatasetInfo

__all__ = ["PALETTE", "build_card", "hardware", "plot_curves", "write_csv"]

log = logging.getLogger(__name__)
PALETTE = [(220, 180, 60), (60, 140, 220), (216, 101, 79), (128, 174, 128), (177, 122, 101), (111, 184, 210),
           (241, 214, 145), (183, 156, 220), (230, 220, 70), (0, 151, 206)]


def hardware(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch threads, accelerator: where a run was trained."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_csv(path: Path, history: list[dict[str, Any]], label_names: list[str]) -> None:
    """Rewrite the per-epoch log (validation columns blank on epochs without validation)."""
    columns = ["epoch", "train_loss", *[f"val_dice_{n}" for n in label_names], "val_mean_dice", "val_mean_iou",
               "lr", "epoch_time_s", "elapsed_s"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in history if r.get(key) not in (None, "")]
    return [r["epoch"] for r in rows], [float(r[key]) for r in rows]


def _plot_matplotlib(path: Path, history: list[dict[str, Any]], dice_keys: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(*_series(history, "train_loss"), label="train loss")
    ax1.set(xlabel="epoch", ylabel="loss", title="training loss")
    for key in dice_keys:
        name = "mean" if key == "val_mean_dice" else key.removeprefix("val_dice_")
        ax2.plot(*_series(history, key), marker=".", label=name)
    ax2.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    ax2.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _png(path: Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 array as a PNG with zlib only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


def _raster_panel(img: np.ndarray, x0: int, series: list[tuple[list[float], list[float]]],
                  y_range: tuple[float, float] | None) -> None:
    """Draw polylines into the 300 x 380 panel at column `x0` (axes in grey, no text)."""
    h, w, pad = 300, 380, 20
    img[pad:h - pad, x0 + pad] = img[h - pad, x0 + pad:x0 + w - pad] = 128
    xs_all = [x for xs, _ in series for x in xs] or [0, 1]
    ys_all = [y for _, ys in series for y in ys] or [0, 1]
    lo, hi = y_range or (min(ys_all), max(ys_all) if max(ys_all) > min(ys_all) else min(ys_all) + 1)
    x_lo, x_hi = min(xs_all), max(max(xs_all), min(xs_all) + 1)
    for k, (xs, ys) in enumerate(series):
        px = x0 + pad + (np.asarray(xs, float) - x_lo) / (x_hi - x_lo) * (w - 2 * pad)
        py = h - pad - (np.clip(ys, lo, hi) - lo) / (hi - lo) * (h - 2 * pad)
        color = PALETTE[k % len(PALETTE)] if len(series) > 1 else (40, 40, 160)
        for i in range(max(len(px) - 1, 1) if len(px) else 0):
            j = min(i + 1, len(px) - 1)
            t = np.linspace(0, 1, 200)
            cols = np.round(px[i] + t * (px[j] - px[i])).astype(int)
            rows = np.round(py[i] + t * (py[j] - py[i])).astype(int)
            img[np.clip(rows, 0, h - 1), np.clip(cols, 0, img.shape[1] - 1)] = color


def plot_curves(path: Path, history: list[dict[str, Any]], label_names: list[str]) -> None:
    """Loss and validation Dice per epoch as a PNG (matplotlib if installed, else a plain raster)."""
    dice_keys = [f"val_dice_{n}" for n in label_names] + ["val_mean_dice"]
    try:
        _plot_matplotlib(path, history, dice_keys)
        return
    except ImportError:
        log.info("matplotlib is not installed; drawing %s without text (pip install matplotlib for labels)", path)
    img = np.full((300, 760, 3), 255, np.uint8)
    _raster_panel(img, 0, [_series(history, "train_loss")], None)
    _raster_panel(img, 380, [_series(history, k) for k in dice_keys], (0.0, 1.0))
    _png(path, img)


def build_card(config: TrainConfig, info: DatasetInfo, model: SegmentationNetwork, norms: list[Normalization],
               spacing: tuple[float, float, float], training: dict[str, Any], metrics: dict[str, Any],
               orientation: str | None = None, input_domain: dict[str, Any] | None = None) -> ModelCard:
    """The complete model card of a trained (or training) network; `orientation` is the training arrays' code,
    `input_domain` what the training inputs looked like (``medseg.domain.describe_inputs``)."""
    names = [info.labels[c] for c in sorted(info.labels) if c != 0]
    labels = [Label(0, info.labels[0], (0, 0, 0))]
    labels += [Label(c, info.labels[c], PALETTE[(c - 1) % len(PALETTE)]) for c in sorted(info.labels) if c != 0]
    inputs = [InputChannel(name, modality, norm) for (name, modality), norm in zip(info.channels, norms, strict=True)]
    summary = config.summary or (f"3D {config.arch} segmenting {', '.join(names)} on {info.channels[0][0]} "
                                 f"{info.channels[0][1]} ({info.name})")
    return ModelCard(
        name=config.name, summary=summary, architecture=config.arch, architecture_args=model.config,
        inputs=tuple(inputs), labels=tuple(labels), patch_size=tuple(config.patch),
        training=finite_or_null(training),
        spacing=spacing, orientation=orientation, input_domain=input_domain, metrics=finite_or_null(metrics),
        description=config.description, engine_version=__version__,
        inference=_mirror_inference(config),
    )


def _mirror_inference(config: TrainConfig) -> dict[str, Any] | None:
    """The card's ``inference.mirror_axes`` when training mirrored fewer than all axes (none: TTA must not mirror
    what the network never saw mirrored, e.g. a left and a right kidney); None keeps MedSeg's default (all)."""
    axes = tuple(sorted(set(config.augment.flip_axes)))
    return None if axes == tuple(range(len(config.patch))) else {"mirror_axes": list(axes)}
