"""The volume table: a ``vtkMRMLTableNode`` with one row per segment, kept in step with the segmentation.

Columns use the names of ``medseg.measure.TABLE_COLUMNS`` (so a CSV from Slicer and one from ``medseg segment``
read alike), with a title, a unit and a description each. Values are the engine's measurements in world
coordinates (parent transforms included). Absent values (no probabilities, no TTA, an empty segment) are NaN in
the node and empty cells in the CSV.

After the user edits the segmentation (Segment Editor), :func:`recompute_table` exports each labelmap layer on the
input volume's grid and measures it again with ``medseg.measure.measure_labels``; the model's soft volume and TTA
interval, which describe the prediction rather than the edited segment, are kept from the segments' tags. The edit
columns (:data:`EDIT_COLUMNS`) compare each segment with the AI's original mask kept with the result
(:mod:`MedSegLib.corrections`): AI and corrected volume, Dice and HD95 between them, mL added and removed, and
whether it was edited; the table node's ``MedSeg.Edited`` attribute says whether the result as a whole was ("1"),
was not ("0"), or cannot tell (""; a result without an AI mask).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vtk

from medseg.edits import EditStats
from medseg.measure import LabelMeasurement, measure_labels, measurements_table

from .corrections import EDITED_ATTRIBUTE, edit_stats, result_edited
from .i18n import tr as _
from .segmentation import (
    TABLE_ROLE,
    layer_labelmaps,
    model_values,
    segment_labels,
    source_volume,
)
from .volumes import array_from_volume

__all__ = [
    "COLUMNS",
    "EDIT_COLUMNS",
    "Column",
    "add_table_node",
    "edit_values",
    "fill_table",
    "measure_segmentation",
    "measurement_rows",
    "recompute_table",
    "result_rows",
    "table_rows",
    "write_csv",
]


@dataclass(frozen=True)
class Column:
    key: str  # column name (as in medseg.measure.TABLE_COLUMNS)
    title: str  # header shown in Slicer
    unit: str
    kind: str  # "string", "int" or "double"
    description: str


EDIT_COLUMNS = (  # the AI's mask against the segment now (MedSegLib.corrections), after a re-measure
    Column("ai_volume_ml", _("AI volume"), "mL", "double", _("volume of the model's own segment, before any edit")),
    Column("corrected_volume_ml", _("Corrected volume"), "mL", "double", _("volume of the segment as it is now")),
    Column("edit_dice", _("Dice AI/corrected"), "", "double",
           _("Dice between the model's segment and the segment now")),
    Column("edit_hd95_mm", _("HD95 AI/corrected"), "mm", "double",
           _("95th percentile Hausdorff distance between the model's segment and the segment now (MONAI's)")),
    Column("added_ml", _("Added"), "mL", "double", _("volume the user added to the model's segment")),
    Column("removed_ml", _("Removed"), "mL", "double", _("volume the user removed from the model's segment")),
    Column("edited", _("Edited"), "", "string", _("yes when the segment differs from the model's, else no")),
)
COLUMNS = (
    Column("name", _("Segment"), "", "string", _("segment name")),
    Column("label_id", _("Label"), "", "int", _("label value in the label map and the NIfTI export")),
    Column("voxel_count", _("Voxels"), "", "int", _("number of voxels in the segment")),
    Column("volume_ml", _("Volume"), "mL", "double", _("voxel count x voxel volume")),
    Column("soft_volume_ml", _("Soft volume"), "mL", "double",
           _("sum of the model's class probability x voxel volume over the whole image")),
    Column("volume_interval_lo_ml", _("Volume low (90 % interval)"), "mL", "double",
           _("low end of the model's 90 % volume interval (split-conformal, calibrated on its validation cases; "
             "for a model without that calibration, the smallest volume over the TTA passes: a range, not an "
             "interval)")),
    Column("volume_interval_hi_ml", _("Volume high (90 % interval)"), "mL", "double",
           _("high end of the model's 90 % volume interval (split-conformal, calibrated on its validation cases; "
             "for a model without that calibration, the largest volume over the TTA passes: a range, not an "
             "interval)")),
    Column("surface_area_mm2", _("Surface area"), "mm2", "double", _("surface area (Crofton estimate)")),
    Column("largest_diameter_mm", _("Largest diameter"), "mm", "double",
           _("largest distance between two voxel centres of the segment")),
    Column("intensity_mean", _("Mean intensity"), "", "double", _("mean of the input volume inside the segment")),
    Column("intensity_std", _("Intensity std"), "", "double", _("standard deviation of the input inside the segment")),
    *EDIT_COLUMNS,
)
_ARRAYS = {"string": vtk.vtkStringArray, "int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray}


def measurement_rows(measurements: Sequence[LabelMeasurement]) -> list[dict]:
    """Engine measurements -> table rows (dicts keyed by :data:`COLUMNS`' keys; None where absent)."""
    return [{c.key: row.get(c.key) for c in COLUMNS} for row in measurements_table(measurements)]


def edit_values(stats: EditStats | None) -> dict:
    """The edit columns of one row from ``medseg.edits.compare_masks`` (all None without an AI mask)."""
    if stats is None:
        return {c.key: None for c in EDIT_COLUMNS}
    return {"ai_volume_ml": stats.ai_volume_ml, "corrected_volume_ml": stats.corrected_volume_ml,
            "edit_dice": stats.dice, "edit_hd95_mm": stats.hd95_mm, "added_ml": stats.added_ml,
            "removed_ml": stats.removed_ml, "edited": "yes" if stats.edited else "no"}


def result_rows(measurements: Sequence[LabelMeasurement]) -> list[dict]:
    """Rows of a result as the model made it: the AI and corrected volumes are its volume, nothing edited."""
    rows = measurement_rows(measurements)
    for row, m in zip(rows, measurements, strict=True):
        row.update(ai_volume_ml=m.volume_ml, corrected_volume_ml=m.volume_ml, edit_dice=1.0,
                   edit_hd95_mm=0.0 if m.voxel_count else None, added_ml=0.0, removed_ml=0.0, edited="no")
    return rows


def fill_table(table_node, rows: Sequence[dict]) -> None:
    """Rewrite the table's columns and rows in place (same node, same ID)."""
    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for column in COLUMNS:
            array = _ARRAYS[column.kind]()
            array.SetName(column.key)
            for row in rows:
                array.InsertNextValue(_cell(row.get(column.key), column.kind))
            table_node.AddColumn(array)
            set_title = getattr(table_node, "SetColumnTitle", None) or table_node.SetColumnLongName  # Slicer < 5.4
            set_title(column.key, f"{column.title} ({column.unit})" if column.unit else column.title)
            table_node.SetColumnUnitLabel(column.key, column.unit)
            table_node.SetColumnDescription(column.key, column.description)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)  # measurements are computed, not typed in
    finally:
        table_node.EndModify(was_modifying)


def _cell(value, kind: str):
    if kind == "string":
        return "" if value is None else str(value)
    if kind == "int":
        return 0 if value is None else int(value)
    return math.nan if value is None else float(value)


def add_table_node(scene, rows: Sequence[dict], name: str):
    """A new table node holding `rows`."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    fill_table(table, rows)
    return table


def table_rows(table_node) -> list[dict]:
    """The table back as rows (NaN -> None), for the panel, tests and CSV."""
    table = table_node.GetTable()
    columns = [table.GetColumnByName(c.key) for c in COLUMNS]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for column, array in zip(COLUMNS, columns, strict=True):
            if array is None:
                row[column.key] = None
                continue
            value = array.GetValue(r)
            row[column.key] = None if isinstance(value, float) and math.isnan(value) else value
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- after edits


def measure_segmentation(segmentation_node, volume_node=None, exported=None) -> list[LabelMeasurement]:
    """Measure every segment of `segmentation_node` on the grid of its source volume, in segment order.

    Each labelmap layer is exported once (segments of one layer never overlap), so overlapping segments that the
    user made are each measured whole; `exported` passes the ``layer_labelmaps`` a caller already has.
    """
    volume_node = source_volume(segmentation_node, volume_node)
    image, geometry = array_from_volume(volume_node, "source volume")
    segmentation = segmentation_node.GetSegmentation()
    measured: dict[str, LabelMeasurement] = {}
    for group, specs, labelmap in exported or layer_labelmaps(segmentation_node, volume_node):
        for sid, m in zip(group, measure_labels(labelmap, geometry, specs, image=image), strict=True):
            soft, interval = model_values(segmentation.GetSegment(sid))
            measured[sid] = dataclasses.replace(m, soft_volume_ml=soft, volume_interval_ml=interval)
    return [measured[sid] for sid, _label in segment_labels(segmentation_node)]


def recompute_table(segmentation_node, table_node=None, volume_node=None):
    """Measure the (edited) segmentation again and rewrite its table in place.

    Args:
        segmentation_node: the segmentation, as the user left it.
        table_node: the table to update (None: the segmentation's own table, referenced by ``TABLE_ROLE``).
        volume_node: the volume to measure on (None: the segmentation's source volume).

    Returns:
        The table node.
    """
    table_node = table_node or segmentation_node.GetNodeReference(TABLE_ROLE)
    if table_node is None:
        raise ValueError(_("segmentation {name!r} has no volume table; pass a table node").format(
            name=segmentation_node.GetName()))
    volume_node = source_volume(segmentation_node, volume_node)
    exported = layer_labelmaps(segmentation_node, volume_node)  # once, for the measures and the edit statistics
    rows = measurement_rows(measure_segmentation(segmentation_node, volume_node, exported))
    stats = edit_stats(segmentation_node, volume_node, exported)
    for row, (sid, _label) in zip(rows, segment_labels(segmentation_node), strict=True):
        row.update(edit_values(None if stats is None else stats.get(sid)))
    fill_table(table_node, rows)
    table_node.SetAttribute(EDITED_ATTRIBUTE, "" if stats is None else
                            "1" if result_edited(segmentation_node, stats) else "0")
    return table_node


# ---------------------------------------------------------------------------------------------- CSV


def _csv_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


def csv_text(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in COLUMNS])
    for row in rows:
        writer.writerow([_csv_value(row.get(c.key)) for c in COLUMNS])
    return out.getvalue()


def write_csv(table_node, path: str | os.PathLike[str]) -> Path:
    """Write the table as CSV (header: the column keys; units are in the keys) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        temporary.write_text(csv_text(table_rows(table_node)), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
