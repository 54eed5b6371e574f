"""Save a result to a folder: the segmentation (``.seg.nrrd``), a NIfTI label map, the volume table (CSV) and the
AI's original label map (``<name>_ai.nii.gz``, what the model produced before any edit).

All or nothing: every file is first written under a hidden temporary name in the target folder, and only when all
of them are complete are they renamed into place (a rename within one folder is atomic). On any error the temporary
files are removed and no file of the target names is created or changed.

Files are on the input volume's own voxel grid and in its own coordinates, as Slicer saves volumes: a parent
transform is not applied (it is a property of the scene, not of the image on disk), so the label map overlays the
input image file voxel for voxel. Label values are the model's label ids (segments the user added get the next free
ids); a one-layer segmentation is written by ``medseg.io.write_segmentation`` (the same file as ``medseg segment``
writes), a segmentation with overlapping segments by Slicer's ``vtkMRMLSegmentationStorageNode`` (one layer per
overlap) and, in the NIfTI map, later segments win where segments overlap.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import slicer
import vtk

from medseg.geometry import Geometry
from medseg.io import write_image, write_segmentation

from .corrections import ai_labels
from .i18n import tr as _
from .segmentation import TABLE_ROLE, labelmap_from_segmentation, layers, segment_labels, source_volume
from .tables import csv_text, table_rows
from .volumes import matrix_from_vtk

__all__ = ["FORMATS", "save_results"]

log = logging.getLogger(__name__)

FORMATS = ("seg.nrrd", "nii.gz", "csv", "ai.nii.gz")


def _safe_name(name: str) -> str:
    """A file name from a node name (which holds the model card's name): no separators, no leading dots, at most
    120 characters (a file name's limit is 255 bytes)."""
    cleaned = re.sub(r"[^\w.\- ]+", "_", name)[:120].strip(" .")
    return cleaned or "segmentation"


def _temporary(folder: Path, name: str, extension: str) -> Path:
    return folder / f".{name}.{secrets.token_hex(4)}.tmp.{extension}"


def _write_seg_nrrd(path: Path, segmentation_node, labels, geometry: Geometry) -> None:
    specs = [label for _sid, label in segment_labels(segmentation_node)]
    if len(layers(segmentation_node)) <= 1:
        write_segmentation(path, labels, geometry, specs)
        return
    storage = slicer.vtkMRMLSegmentationStorageNode()  # overlapping segments: Slicer's multi-layer file
    storage.SetFileName(str(path))
    storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentation_node):
        raise OSError(_("cannot write {path}: Slicer's segmentation writer failed; check that the folder is writable "
                        "and has free space").format(path=path))


def save_results(folder: str | os.PathLike[str], segmentation_node, volume_node=None, table_node=None,
                 base_name: str | None = None, formats: Sequence[str] = FORMATS,
                 overwrite: bool = True) -> dict[str, Path]:
    """Save the segmentation, its label map and its table into `folder`, all or nothing.

    Args:
        folder: the folder the user picked (created if missing).
        segmentation_node: the (possibly edited) segmentation.
        volume_node: the grid to write on (None: the segmentation's source volume).
        table_node: the volume table for the CSV (None: the segmentation's table; skipped if it has none).
        base_name: file name without extension (None: the segmentation node's name).
        formats: any of ``seg.nrrd``, ``nii.gz``, ``csv``, ``ai.nii.gz`` (the AI's original label map, kept with the
            result (:mod:`MedSegLib.corrections`), as ``<name>_ai.nii.gz``; skipped for a result without one).
        overwrite: replace existing files of the same names (else FileExistsError before anything is written).

    Returns:
        ``{format: path}`` of the files written.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(_("unknown export format(s) {unknown}; use {formats}").format(unknown=unknown,
                                                                                       formats=", ".join(FORMATS)))
    folder = Path(folder)
    name = _safe_name(base_name or segmentation_node.GetName())
    targets = {fmt: folder / (f"{name}_ai.nii.gz" if fmt == "ai.nii.gz" else f"{name}.{fmt}") for fmt in formats}
    table_node = table_node or segmentation_node.GetNodeReference(TABLE_ROLE)
    if "csv" in targets and table_node is None:
        log.warning("segmentation %s has no volume table: no CSV written", segmentation_node.GetName())
        targets.pop("csv")
    ai = ai_labels(segmentation_node, volume_node) if "ai.nii.gz" in targets else None
    if ai is None:
        targets.pop("ai.nii.gz", None)
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(_("{files} already exist(s); pick another folder or name, or allow overwriting")
                              .format(files=", ".join(existing)))
    volume_node = source_volume(segmentation_node, volume_node)
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    geometry = Geometry.from_ijk_to_ras(matrix_from_vtk(ijk_to_ras))  # the volume's own coordinates, as Slicer saves it
    labels = None
    if {"seg.nrrd", "nii.gz"} & targets.keys():
        pairs = segment_labels(segmentation_node)
        labels = labelmap_from_segmentation(segmentation_node, volume_node, [sid for sid, _label in pairs],
                                            [label.id for _sid, label in pairs])

    def write(fmt: str, path: Path) -> None:
        if fmt == "seg.nrrd":
            _write_seg_nrrd(path, segmentation_node, labels, geometry)
        elif fmt == "nii.gz":
            write_image(path, labels, geometry)
        elif fmt == "ai.nii.gz":
            write_image(path, ai, geometry)
        else:
            path.write_text(csv_text(table_rows(table_node)), encoding="utf-8")

    _write_all(folder, name, targets, write)
    log.info("saved %s", ", ".join(str(p) for p in targets.values()))
    return targets


def _write_all(folder: Path, name: str, targets: dict[str, Path], write) -> None:
    """Write every file under a temporary name, then rename them all into place; on error remove the temporaries."""
    folder.mkdir(parents=True, exist_ok=True)
    temporaries: dict[str, Path] = {}
    try:
        for fmt in targets:
            temporaries[fmt] = _temporary(folder, name, fmt)
            write(fmt, temporaries[fmt])
        for fmt, target in targets.items():
            os.replace(temporaries.pop(fmt), target)
    finally:
        for path in temporaries.values():
            path.unlink(missing_ok=True)
