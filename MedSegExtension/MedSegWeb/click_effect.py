"""A segment editor effect for the page's probability-guided clicks: a left click in a slice view hands its world
(RAS) point to a handler and draws nothing.

The edit itself is the bridge's (``MedSegLib.guided_edit.add_region_at`` / ``remove_region_at``, as the Slicer
panel's Add / Remove buttons call them), done by :meth:`MedSegWeb.session.WebSession.guided_click`; this module is
only how a click in trame-slicer's views reaches it (the Slicer panel uses the crosshair instead).
"""

from __future__ import annotations

from collections.abc import Callable

from slicer import vtkMRMLAbstractViewNode, vtkMRMLInteractionEventData, vtkMRMLNode, vtkMRMLSliceNode
from trame_slicer.segmentation.segmentation_effect import SegmentationEffect
from trame_slicer.segmentation.segmentation_effect_pipeline import SegmentationEffectPipeline
from vtkmodules.vtkCommonCore import vtkCommand

__all__ = ["ClickEffect"]

_PRESS = int(vtkCommand.LeftButtonPressEvent)


class ClickEffect(SegmentationEffect):
    """Active in the slice views: each left click calls :attr:`handler` with the clicked RAS point."""

    def __init__(self) -> None:
        super().__init__()
        self.handler: Callable[[tuple[float, float, float]], None] | None = None

    def _create_pipeline(self, view_node: vtkMRMLAbstractViewNode, _parameter: vtkMRMLNode):
        return _ClickPipeline() if isinstance(view_node, vtkMRMLSliceNode) else None

    def click(self, ras_point) -> None:
        if self.handler is not None:
            self.handler(tuple(float(v) for v in ras_point))


class _ClickPipeline(SegmentationEffectPipeline[ClickEffect]):
    """Takes the left button press in one slice view (the view's own interactions keep the other events)."""

    def CanProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> tuple[bool, float]:
        return bool(self.IsActive()) and event_data.GetType() == _PRESS, 0.0

    def ProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> bool:
        if event_data.GetType() != _PRESS:
            return False
        self._effect.click(event_data.GetWorldPosition())
        return True
