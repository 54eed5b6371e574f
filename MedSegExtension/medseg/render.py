"""A picture of a result for reports and the README: three orthogonal slices with the mask and a heat map.

Numpy only (no plotting library): slices through the centre of the segmented structures, shown with
square millimetres (each axis stretched by its spacing), the mask blended in the label colors, and below
it the Grad-CAM (or any [0, 1] map) in a black-red-yellow-white "hot" scale.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping

import numpy as np

from .geometry import Geometry
from .orientation import reorientation
from .outputs import OutputSet

__all__ = ["overview", "png_bytes", "write_png"]


def png_bytes(rgb: np.ndarray) -> bytes:
    """An `(H, W, 3)` uint8 array as the bytes of a PNG file (zlib only)."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + np.ascontiguousarray(rgb[r], dtype=np.uint8).tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_png(path: str | os.PathLike[str], rgb: np.ndarray, *, outputs: OutputSet | None = None) -> None:
    """Write an `(H, W, 3)` uint8 array as a PNG atomically, or into `outputs` (a run's output set)."""
    data = png_bytes(rgb)
    if outputs is not None:
        outputs.write_bytes(path, data)
        return
    with OutputSet() as single:
        single.write_bytes(path, data)


def _hot(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB floats: black, red, yellow, white."""
    x = np.clip(x, 0, 1)[..., None]
    return np.concatenate([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], axis=-1)


def _gray(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    return np.repeat(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=-1)


def _stretch(panel: np.ndarray, row_mm: float, col_mm: float, pixel_mm: float) -> np.ndarray:
    rows = np.minimum((np.arange(round(panel.shape[0] * row_mm / pixel_mm)) * pixel_mm / row_mm).astype(int),
                      panel.shape[0] - 1)
    cols = np.minimum((np.arange(round(panel.shape[1] * col_mm / pixel_mm)) * pixel_mm / col_mm).astype(int),
                      panel.shape[1] - 1)
    return panel[rows][:, cols]


def _slices(volume: np.ndarray, center: np.ndarray) -> list[np.ndarray]:
    """Axial (k), coronal (j) and sagittal (i) slices through `center` (k, j, i); k rows flipped upward."""
    k, j, i = (int(c) for c in center)
    return [volume[k], volume[::-1, j], volume[::-1, :, i]]


def overview(image: np.ndarray, labels: np.ndarray, geometry: Geometry, colors: Mapping[int, tuple[int, int, int]],
             heat: np.ndarray | None = None, panel_mm: float | None = None) -> np.ndarray:
    """An RGB picture: top row mask over the image, bottom row `heat` over the image (if given).

    The volume is first brought to LPS voxel order (permutation and flips only), so the panels read as in a
    radiology viewer for any stored orientation: axial with anterior up and the patient's right on the left,
    coronal and sagittal with superior up.

    Args:
        image: `(Z, Y, X)` intensities; labels: `(Z, Y, X)` label map on the same grid.
        geometry: for the spacing (millimetre-square pixels).
        colors: label id -> RGB 0-255.
        heat: `(Z, Y, X)` map in [0, 1] (Grad-CAM, probability, uncertainty).
        panel_mm: pixel size in mm (default: a quarter of the finest spacing).
    """
    to_lps = reorientation(geometry, labels.shape, "LPS")  # shown as radiologists read it, whatever the voxel order
    image, labels, geometry = to_lps.apply(image), to_lps.apply(labels), to_lps.geometry
    heat = None if heat is None else to_lps.apply(heat)
    fg = np.argwhere(labels > 0)
    center = fg.mean(0) if len(fg) else np.asarray(labels.shape) / 2
    sx, sy, sz = geometry.spacing
    pixel = panel_mm or min(geometry.spacing) / 4
    spacing = [(sy, sx), (sz, sx), (sz, sy)]  # (row, column) mm of the three slices
    gray = _gray(image)
    rows = []
    mask_rgb = np.zeros((*labels.shape, 3))
    alpha = np.zeros(labels.shape)
    for label, color in colors.items():
        mask_rgb[labels == label] = np.asarray(color) / 255
        alpha[labels == label] = 0.55 if label else 0
    layers = [(mask_rgb, alpha)] + ([(_hot(heat), 0.8 * np.clip(heat, 0, 1))] if heat is not None else [])
    for rgb, a in layers:
        blended = gray * (1 - a[..., None]) + rgb * a[..., None]
        panels = [_stretch(p, r, c, pixel) for p, (r, c) in zip(_slices(blended, center), spacing, strict=True)]
        height = max(p.shape[0] for p in panels)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
        rows.append(np.concatenate(padded, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
