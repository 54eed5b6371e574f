"""Closed surface meshes of a label map, per label, in patient coordinates (LPS mm), as STL and OBJ.

Each label's mask is cut out with a one-voxel margin of background (so every surface closes), turned into a
triangle surface by scikit-image's marching cubes at the 0.5 level, its vertices mapped through the image's
:class:`~medseg.geometry.Geometry` (spacing, direction, origin) to **LPS** millimetres, the coordinates of ITK
and DICOM and the ones 3D Slicer assumes for STL and OBJ files unless their header says ``SPACE=RAS``; each file
says ``SPACE=LPS`` in its header (STL) or first comment (OBJ). The surface is then smoothed by Taubin's
lambda/mu filter (trimesh's ``filter_taubin``): a shrinking Laplacian step followed by an inflating one, which
removes the voxel staircase without the shrinkage of plain Laplacian smoothing. Faces are wound so that normals
point outwards (a positive signed volume), also for a mirrored (left-handed) direction matrix.

Measured on a digital sphere of radius 12.3 voxels, the mesh volume is within 0.3 % of the voxel volume, and on
real hippocampus labels on oblique, anisotropic grids within a few % (``Testing/engine/test_meshes.py``).
No VTK: the engine never imports it.

A label absent from the map gives an empty mesh (no triangles): its files are still written, so that a folder
never mixes the meshes of two runs.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .card import Label
from .geometry import Geometry
from .measure import label_bounding_boxes
from .outputs import OutputSet, unique_slugs
from .text import printable

__all__ = ["COORDINATES", "MeshOptions", "SurfaceMesh", "label_meshes", "mesh_paths", "obj_bytes", "stl_bytes",
           "surface_mesh", "write_meshes"]

COORDINATES = "LPS"
_STL_HEADER_BYTES = 80


@dataclass(frozen=True)
class MeshOptions:
    """How surfaces are smoothed.

    Attributes:
        iterations: Taubin passes (shrink and inflate alternate; 0: the raw marching-cubes surface).
        lamb: the shrinking step (0-1).
        nu: the inflating step (slightly larger than ``lamb``, so that the volume is kept).
    """

    iterations: int = 20
    lamb: float = 0.5
    nu: float = 0.53

    def __post_init__(self) -> None:
        if not (isinstance(self.iterations, int) and 0 <= self.iterations <= 1000):
            raise ValueError(f"mesh smoothing iterations must be an integer in 0-1000, got {self.iterations!r}")
        if not (0 < self.lamb < 1 and 0 < self.nu < 1):
            raise ValueError(f"Taubin lamb and nu must be in (0, 1), got {self.lamb!r} and {self.nu!r}")


@dataclass(frozen=True)
class SurfaceMesh:
    """One label's closed triangle surface.

    Attributes:
        label_id, name: the label (name from the model card).
        vertices: `(N, 3)` float64 LPS millimetres.
        faces: `(M, 3)` int vertex indices, counter-clockwise seen from outside.
    """

    label_id: int
    name: str
    vertices: np.ndarray
    faces: np.ndarray

    @property
    def volume_ml(self) -> float:
        """Enclosed volume (divergence theorem), in mL."""
        if len(self.faces) == 0:
            return 0.0
        a, b, c = (self.vertices[self.faces[:, n]] for n in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0 / 1000.0)


def surface_mesh(mask: np.ndarray, geometry: Geometry, options: MeshOptions = MeshOptions()) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """The smoothed closed surface of a boolean `(Z, Y, X)` mask: `(vertices LPS mm, faces)`; empty arrays for an
    empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"a surface mesh needs a 3D (Z, Y, X) mask, got shape {mask.shape}")
    box = label_bounding_boxes(mask.astype(np.uint8)).get(1)
    if box is None:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return _crop_surface(mask[box], tuple(s.start for s in box), geometry, options)


def _crop_surface(crop: np.ndarray, start_kji: tuple[int, ...], geometry: Geometry,
                  options: MeshOptions) -> tuple[np.ndarray, np.ndarray]:
    """The surface of a boolean crop whose voxel (0, 0, 0) is `start_kji` of the grid of `geometry`."""
    import trimesh
    from skimage.measure import marching_cubes
    from trimesh.smoothing import filter_taubin

    kji, faces, _, _ = marching_cubes(np.pad(crop, 1).astype(np.float32), 0.5)
    ijk = (kji + np.asarray(start_kji, dtype=float) - 1.0)[:, ::-1]
    mesh = trimesh.Trimesh(geometry.index_to_lps(ijk), faces, process=True)
    if options.iterations:
        filter_taubin(mesh, lamb=options.lamb, nu=options.nu, iterations=options.iterations)
    if mesh.volume < 0:  # marching cubes winds (k, j, i) faces; a mirrored direction flips them again
        mesh.invert()
    return np.asarray(mesh.vertices, dtype=float), np.asarray(mesh.faces, dtype=np.int64)


def label_meshes(labels: np.ndarray, geometry: Geometry, label_specs: Sequence[Label],
                 options: MeshOptions = MeshOptions()) -> list[SurfaceMesh]:
    """A :class:`SurfaceMesh` per foreground label of `label_specs` (empty for a label absent from `labels`)."""
    boxes = label_bounding_boxes(labels)
    meshes = []
    for label in label_specs:
        if label.id == 0:
            continue
        box = boxes.get(label.id)
        if box is None:
            vertices, faces = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        else:
            vertices, faces = _crop_surface(labels[box] == label.id, tuple(s.start for s in box), geometry, options)
        meshes.append(SurfaceMesh(label.id, label.name, vertices, faces))
    return meshes


def mesh_paths(folder: str | os.PathLike[str], label_specs: Sequence[Label]) -> dict[int, tuple[Path, Path]]:
    """Label id -> (``<slug>.stl``, ``<slug>.obj``) in `folder` for each foreground label, names made by
    :func:`~medseg.outputs.unique_slugs` (never the raw label name)."""
    foreground = {label.id: label.name for label in label_specs if label.id != 0}
    slugs = unique_slugs(foreground)
    return {label_id: (Path(folder) / f"{slug}.stl", Path(folder) / f"{slug}.obj") for label_id, slug in slugs.items()}


def _header_name(name: str) -> str:
    return printable(name).encode("ascii", "replace").decode("ascii").replace("\n", " ")


def stl_bytes(mesh: SurfaceMesh) -> bytes:
    """Binary STL (little-endian float32, facet normals from the winding); the 80-byte header names the label
    and says ``SPACE=LPS`` (3D Slicer reads it as LPS)."""
    header = f"medseg SPACE={COORDINATES} mm label {mesh.label_id} {_header_name(mesh.name)}"
    header_bytes = header.encode("ascii")[:_STL_HEADER_BYTES].ljust(_STL_HEADER_BYTES, b" ")
    record = np.dtype([("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])
    data = np.zeros(len(mesh.faces), dtype=record)
    if len(mesh.faces):
        triangles = mesh.vertices[mesh.faces]
        normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        data["normal"] = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
        data["vertices"] = triangles
    return header_bytes + struct.pack("<I", len(mesh.faces)) + data.tobytes()


def obj_bytes(mesh: SurfaceMesh) -> bytes:
    """Wavefront OBJ text: a ``# SPACE=LPS`` comment, the object name, vertices (mm) and 1-based faces."""
    name = _header_name(mesh.name)
    lines = [f"# medseg surface mesh of label {mesh.label_id} {name}", f"# SPACE={COORDINATES} (millimetres)",
             f"o {'_'.join(name.split()) or 'label'}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_meshes(folder: str | os.PathLike[str], meshes: Sequence[SurfaceMesh], label_specs: Sequence[Label], *,
                 outputs: OutputSet | None = None) -> list[Path]:
    """Write ``<slug>.stl`` and ``<slug>.obj`` per mesh into `folder` (all or nothing; into `outputs` when given).

    Returns:
        The paths written (or to be placed when `outputs` commits).
    """
    paths = mesh_paths(folder, label_specs)
    written = []

    def write(target: OutputSet) -> None:
        for mesh in meshes:
            stl, obj = paths[mesh.label_id]
            written.extend([target.write_bytes(stl, stl_bytes(mesh)), target.write_bytes(obj, obj_bytes(mesh))])

    if outputs is not None:
        write(outputs)
    else:
        with OutputSet() as single:
            write(single)
    return written
