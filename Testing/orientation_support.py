"""Voxel orders for the orientation tests, built independently of ``medseg.orientation``: numpy transposes and
flips with the geometry that keeps every voxel in its physical place; and a bundled model whose card records
its training orientation (a copy in a temporary folder, written by scripts/update_card.py)."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
from pathlib import Path

import numpy as np

from medseg.catalog import resources_dir
from medseg.geometry import Geometry

REPO = Path(__file__).resolve().parents[1]
# The training arrays' orientation of each bundled model (every case of its data set has this code).
TRAINED_ORIENTATION = {"hippocampus-unet3d": "RAS", "hippocampus-unetpp": "RAS", "left-atrium-vnet": "LPS"}

# (axes, flips): result array axis a takes source array axis axes[a], reversed where flips[a]; 6 x 8 = 48.
VOXEL_ORDERS = [(axes, flips) for axes in itertools.permutations(range(3))
                for flips in itertools.product((False, True), repeat=3)]


def update_card_module():
    """scripts/update_card.py as a module."""
    spec = importlib.util.spec_from_file_location("update_card", REPO / "scripts" / "update_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def oriented_model(folder: Path, name: str = "hippocampus-unet3d", orientation: str | None = None) -> Path:
    """A copy of bundled model `name` in `folder` whose card records `orientation` (default: its training one)."""
    path = folder / f"{name}.safetensors"
    shutil.copyfile(resources_dir() / "Models" / f"{name}.safetensors", path)
    update_card_module().update_card(path, {"orientation": orientation or TRAINED_ORIENTATION[name]})
    return path


def stored_as(array: np.ndarray, geometry: Geometry, axes, flips) -> tuple[np.ndarray, Geometry]:
    """The same physical image stored in another voxel order: `array` `(..., Z, Y, X)` transposed and flipped, and
    the geometry whose direction columns are permuted and negated to match, its origin at the new voxel 0."""
    lead = array.ndim - 3
    out = np.transpose(array, (*range(lead), *(lead + a for a in axes)))
    out = np.flip(out, tuple(lead + a for a in range(3) if flips[a]))
    shape_ijk = np.asarray(array.shape[lead:][::-1])
    matrix = geometry.matrix
    new_matrix = np.eye(4)
    corner = np.zeros(3)
    for a in range(3):  # result array axis a is index axis n = 2 - a; it runs along source index axis c
        n, c = 2 - a, 2 - axes[a]
        new_matrix[:3, n] = -matrix[:3, c] if flips[a] else matrix[:3, c]
        corner[c] = shape_ijk[c] - 1 if flips[a] else 0
    origin = matrix[:3, :3] @ corner + matrix[:3, 3]
    spacing = np.linalg.norm(new_matrix[:3, :3], axis=0)
    direction = new_matrix[:3, :3] / spacing
    return np.ascontiguousarray(out), Geometry(tuple(spacing), tuple(origin), tuple(map(tuple, direction)))


def back_from(array: np.ndarray, axes, flips) -> np.ndarray:
    """The inverse of :func:`stored_as` on an array: a result on the reordered grid back on the original grid."""
    lead = array.ndim - 3
    out = np.flip(array, tuple(lead + a for a in range(3) if flips[a]))
    return np.transpose(out, (*range(lead), *(lead + int(a) for a in np.argsort(axes))))


def box_in(box_ijk, shape_zyx, axes, flips) -> tuple[int, ...]:
    """An ROI (i0, i1, j0, j1, k0, k1) of the original grid as the same voxels' box on the reordered grid."""
    ranges = [(box_ijk[4], box_ijk[5]), (box_ijk[2], box_ijk[3]), (box_ijk[0], box_ijk[1])]  # array order
    out = []
    for a in range(3):
        lo, hi = ranges[axes[a]]
        size = shape_zyx[axes[a]]
        out.append((size - hi, size - lo) if flips[a] else (lo, hi))
    (k0, k1), (j0, j1), (i0, i1) = out
    return (i0, i1, j0, j1, k0, k1)
