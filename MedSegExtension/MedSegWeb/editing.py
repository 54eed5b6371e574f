"""The page's correction steps on a :class:`MedSegWeb.session.WebSession`: trame-slicer's segment editor effects
(paint, erase, scissors, draw, threshold, islands, smoothing, logical operators) and the bridge's probability-guided
editing (``MedSegLib.guided_edit``), each an undoable step whose table the page re-measures. A mixin: it uses the
session's ``app``, ``segmentation``, ``task``, ``scene`` and result state.
"""

from __future__ import annotations

from typing import Any

GUIDED_CLICKS = ("guided_add", "guided_remove")  # a click in a slice view adds / removes a probable region
EFFECTS = ("none", "paint", "erase", "scissors", "draw", "threshold", "islands", "smoothing", "logical", *GUIDED_CLICKS)
SCISSORS_FILLS = ("erase_inside", "erase_outside", "fill_inside", "fill_outside")
ISLAND_MODES = ("keep_largest", "remove_small")
SMOOTHING_MODES = ("median", "opening", "closing", "gaussian")
LOGICAL_OPERATIONS = ("copy", "union", "intersect", "subtract", "invert", "clear")  # trame-slicer's, on 2 segments
WITH_OTHER_SEGMENT = ("copy", "union", "intersect", "subtract")  # the operations that read a second segment
THRESHOLD_PERCENTILES = (1.0, 99.0)  # the Threshold effect's default range: these percentiles of the volume


def _effect_types() -> dict[str, type]:
    """The page's effect names -> trame-slicer's segment editor effect classes."""
    from trame_slicer.segmentation import (
        SegmentationEffectDraw,
        SegmentationEffectErase,
        SegmentationEffectIslands,
        SegmentationEffectLogicalOperators,
        SegmentationEffectPaint,
        SegmentationEffectScissors,
        SegmentationEffectSmoothing,
        SegmentationEffectThreshold,
    )

    return {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase, "scissors": SegmentationEffectScissors,
            "draw": SegmentationEffectDraw, "threshold": SegmentationEffectThreshold,
            "islands": SegmentationEffectIslands, "smoothing": SegmentationEffectSmoothing,
            "logical": SegmentationEffectLogicalOperators}


def _nothing_under_click(add: bool, threshold: float) -> str:
    if add:
        return (f"no probable region under the click (probability >= {threshold:.2f} within 3 voxels): click inside "
                "the segment's probability overlay, or lower the probability threshold")
    return "no part of the segment under the click (within 3 voxels): click on the segment to remove that piece"

def _threshold_range(low: Any, high: Any) -> tuple[float, float]:
    """The Threshold effect's typed range, or ValueError naming the bound that is not a number or the fix."""
    low, high = number_field(low, "threshold minimum"), number_field(high, "threshold maximum")
    if low > high:
        raise ValueError(f"threshold range {low:g} to {high:g}: the minimum is above the maximum; swap them")
    return low, high


def number_field(value: Any, what: str) -> float:
    """A number typed in the page (a text field gives a string), or ValueError naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a number; type a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{what}: {value!r} is not a finite number; type a number")
    return number

class Editing:
    """The correction half of ``WebSession`` (see the module docstring)."""

    def set_effect(self, name: str, brush_mm: float | None = None, scissors_fill: str = "erase_inside",
                   threshold_range: tuple[Any, Any] | None = None) -> None:
        """The segment editor's effect for the views: trame-slicer's Paint, Erase, Scissors (a lasso drawn on the
        slice view cuts the segment through every slice; `scissors_fill` one of ``SCISSORS_FILLS``), Draw (a polygon
        drawn on the slice view fills the segment on that slice), Threshold (the voxels in `threshold_range` previewed
        in the slice view in the segment's colour; Apply: :meth:`threshold`), Islands and Logical operators (nothing to
        draw: Apply) and Smoothing (a brush, or Apply to the whole segment), each edit a step of its undo stack;
        "guided_add" / "guided_remove": a click in a slice view calls :attr:`click_handler` with its RAS point and
        whether to add (the page then calls :meth:`guided_click`); "none": view only.
        """
        from trame_slicer.segmentation import ScissorsEffectFillMode
        from trame_slicer.segmentation.paint_effect_parameters import BrushDiameterMode

        editor = self.app.segmentation_editor
        if name == "none" or self.segmentation is None:
            editor.deactivate_effect()
            return
        if name not in EFFECTS:
            raise ValueError(f"unknown effect {name!r}; use one of {', '.join(EFFECTS)}")
        if name == "scissors" and scissors_fill not in SCISSORS_FILLS:
            raise ValueError(f"unknown scissors mode {scissors_fill!r}; use one of {', '.join(SCISSORS_FILLS)}")
        if name in GUIDED_CLICKS:
            from .click_effect import ClickEffect

            effect = editor.set_active_effect_type(ClickEffect)
            add = name == "guided_add"
            effect.handler = (lambda ras: self.click_handler(ras, add)) if self.click_handler is not None else None
            return
        effect = editor.set_active_effect_type(_effect_types()[name])
        if effect is None:
            return
        if brush_mm and hasattr(effect, "set_brush_diameter"):
            effect.set_brush_diameter(float(brush_mm), BrushDiameterMode.Absolute)
        if name == "scissors":
            effect.set_fill_mode(ScissorsEffectFillMode[scissors_fill.upper()])
        if name == "threshold" and threshold_range is not None:
            effect.set_threshold_min_max_values(_threshold_range(*threshold_range))

    def _effect_on(self, name: str, segment_id: str):
        """`name`'s effect made active on `segment_id` (for the effects applied by a button)."""
        if self.segmentation is None:
            raise ValueError("no segmentation to edit; click Segment first")
        if self.task is not None:
            raise ValueError("a segmentation is running; edit after it ends")
        editor = self.app.segmentation_editor
        if segment_id not in editor.get_segment_ids():
            raise ValueError(f"no segment {segment_id!r} in the result; pick one in the segment list")
        editor.set_active_segment_id(segment_id)
        return editor.set_active_effect_type(_effect_types()[name])

    def islands(self, segment_id: str, mode: str = "keep_largest", min_voxels: int = 1000) -> None:
        """trame-slicer's Islands effect on one segment (face-connected islands, as Slicer's): keep the largest
        island, or remove the islands smaller than `min_voxels`; one step of the undo stack."""
        if mode not in ISLAND_MODES:
            raise ValueError(f"unknown islands mode {mode!r}; use one of {', '.join(ISLAND_MODES)}")
        min_voxels = number_field(min_voxels, "minimum island size (voxels)")
        if mode == "remove_small" and min_voxels < 1:
            raise ValueError(f"minimum island size {min_voxels:g} voxels: give at least 1")
        effect = self._effect_on("islands", segment_id)
        if mode == "keep_largest":
            effect.keep_largest_island()
        else:
            effect.remove_small_islands(int(min_voxels))

    def smooth(self, segment_id: str, mode: str = "median", size_mm: float = 3.0) -> None:
        """trame-slicer's Smoothing effect on the whole segment: median, opening or closing with a kernel of
        `size_mm`, or a Gaussian of standard deviation `size_mm`; one step of the undo stack."""
        from trame_slicer.segmentation.segmentation_effect_smoothing import SmoothingEffectMode

        if mode not in SMOOTHING_MODES:
            raise ValueError(f"unknown smoothing method {mode!r}; use one of {', '.join(SMOOTHING_MODES)}")
        size_mm = number_field(size_mm, "smoothing size (mm)")
        if not size_mm > 0:
            raise ValueError(f"smoothing size {size_mm:g} mm: give a positive size")
        effect = self._effect_on("smoothing", segment_id)
        effect.set_kernel_size(size_mm)
        effect.set_standard_deviation(size_mm)
        effect.apply_smoothing(smoothing_mode=SmoothingEffectMode[mode.upper()])

    def threshold_defaults(self) -> tuple[float, float]:
        """The Threshold effect's starting range: the ``THRESHOLD_PERCENTILES`` of the volume shown, rounded to 4
        significant digits ((0, 0) without a volume)."""
        import numpy as np
        from vtkmodules.util.numpy_support import vtk_to_numpy

        image = self.volume.GetImageData() if self.volume is not None else None
        if image is None or image.GetPointData().GetScalars() is None:
            return 0.0, 0.0
        values = vtk_to_numpy(image.GetPointData().GetScalars())
        low, high = (float(f"{v:.4g}") for v in np.percentile(values, THRESHOLD_PERCENTILES))
        return low, high

    def threshold(self, segment_id: str, low: Any, high: Any) -> None:
        """trame-slicer's Threshold effect on one segment: as Slicer's, the segment becomes the voxels of the volume
        whose intensity is in [`low`, `high`] (bounds included), within the editor's editable area, taken from the
        other segments as its overwrite mode says (trame-slicer's defaults: everywhere, overwrite all); one step of
        the undo stack."""
        from trame_slicer.segmentation.segment_modifier import ModificationMode

        low, high = _threshold_range(low, high)
        effect = self._effect_on("threshold", segment_id)
        effect.set_threshold_min_max_values((low, high))
        effect.set_mode(ModificationMode.Set)  # Slicer's Threshold replaces the segment (trame-slicer's default adds)
        effect.apply()

    def logical(self, segment_id: str, operation: str, other_id: str = "") -> None:
        """trame-slicer's Logical operators on `segment_id`: copy `other_id` into it, union with it, intersect with
        it, subtract it, invert the segment or clear it; one step of the undo stack. With trame-slicer's default
        overwrite mode (overwrite all) segments do not overlap: the voxels copy, union or invert give to `segment_id`
        leave the other segments (Slicer's own operators bypass that mode and let segments overlap)."""
        if operation not in LOGICAL_OPERATIONS:
            raise ValueError(f"unknown logical operation {operation!r}; use one of {', '.join(LOGICAL_OPERATIONS)}")
        if operation in WITH_OTHER_SEGMENT:
            names = dict(zip(self.app.segmentation_editor.get_segment_ids(),
                             self.app.segmentation_editor.get_segment_names(), strict=True))
            if other_id not in names:
                raise ValueError(f"{operation} needs a second segment: pick one in \"with segment\"")
            if other_id == segment_id:
                raise ValueError(f"{operation} of {names[other_id]!r} with itself: pick another segment")
        effect = self._effect_on("logical", segment_id)
        if operation == "invert":
            effect.invert()
        elif operation == "clear":
            effect.clear()
        else:
            {"copy": effect.copy, "union": effect.add, "intersect": effect.intersect,
             "subtract": effect.subtract}[operation](other_id)

    def set_segment(self, segment_id: str) -> None:
        self.app.segmentation_editor.set_active_segment_id(segment_id)

    def segment_items(self) -> list[dict]:
        editor = self.app.segmentation_editor
        if self.segmentation is None:
            return []
        return [{"title": name, "value": sid} for sid, name in
                zip(editor.get_segment_ids(), editor.get_segment_names(), strict=True)]

    def guided_threshold(self, segment_id: str, threshold: float) -> None:
        """The segment set to its probability map above `threshold`, grown from the segment
        (``MedSegLib.guided_edit.apply_threshold``), as one step of the page's undo stack."""
        from trame_slicer.segmentation.segmentation_undo_command import SegmentationLabelMapUndoCommand

        from MedSegLib.guided_edit import apply_threshold

        if self.segmentation is None:
            raise ValueError("no segmentation to edit; click Segment first")
        with SegmentationLabelMapUndoCommand.push_state_change(self.app.segmentation_editor.active_segmentation):
            apply_threshold(self.scene, self.segmentation, segment_id, float(threshold), save_state=lambda: None)

    def guided_click(self, segment_id: str, ras_point, add: bool, threshold: float) -> int:
        """A probability-guided click (the panel's Add / Remove at the crosshair): add the region of the segment's
        probability map at or above `threshold` under the world RAS point (``MedSegLib.guided_edit.add_region_at``),
        or remove the segment's connected piece there (``remove_region_at``); one step of the page's undo stack.

        Returns:
            the size (voxels) of the region added (part of it may have been in the segment already) or removed.
            Raises ValueError with a readable message (the segmentation unchanged, nothing pushed on the undo stack)
            when nothing probable is under the click, the result kept no probability map, or the point is outside
            the volume.
        """
        from trame_slicer.segmentation.segmentation_undo_command import SegmentationLabelMapUndoCommand

        from MedSegLib.guided_edit import add_region_at, remove_region_at

        if self.segmentation is None:
            raise ValueError("no segmentation to edit; click Segment first")
        if self.task is not None:
            raise ValueError("a segmentation is running; edit after it ends")
        threshold = number_field(threshold, "probability threshold")
        edit = add_region_at if add else remove_region_at
        with SegmentationLabelMapUndoCommand.push_state_change(self.app.segmentation_editor.active_segmentation):
            region = edit(self.scene, self.segmentation, segment_id, ras_point, threshold, save_state=lambda: None)
            if not region.any():  # raised inside: the undo command is not pushed
                raise ValueError(_nothing_under_click(add, threshold))
        return int(region.sum())

    def undo(self) -> None:
        if self.undo_stack.can_undo():
            self.undo_stack.undo()

    def redo(self) -> None:
        if self.undo_stack.can_redo():
            self.undo_stack.redo()

