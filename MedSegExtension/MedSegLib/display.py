"""Heat-map overlays (Grad-CAM, probability, uncertainty) in the slice views.

An overlay is a scalar volume on the input's voxel grid with values in [0, 1], shown with a heat color map at a
fixed window 0..1 (so that 0.5 always looks the same, whatever the map holds) as the foreground layer of every slice
view. The slice views are found through their ``vtkMRMLSliceCompositeNode`` in the scene, so no GUI is needed.

Color maps: Slicer's color files ("Inferno", "ColdToHotRainbow") are loaded by the application; the core color
logic alone gives the built-in tables ("PET-Heat", "Iron", "Rainbow", ...). The first of :data:`HEAT_COLOR_MAPS`
present is used; with none, the volume keeps its default gray map and a warning is logged.
"""

from __future__ import annotations

import logging

import numpy as np

from .volumes import volume_from_array

__all__ = ["HEAT_COLOR_MAPS", "add_overlay_volume", "heat_color_node", "set_overlay_opacity", "show_overlay",
           "style_overlay"]

log = logging.getLogger(__name__)

HEAT_COLOR_MAPS = ("Inferno", "ColdToHotRainbow", "PET-Heat", "Iron", "Rainbow")


def heat_color_node(scene, names=HEAT_COLOR_MAPS):
    """The first color node of `names` in the scene (by name), or None."""
    for name in names:
        node = scene.GetFirstNodeByName(name)
        if node is not None and node.IsA("vtkMRMLColorNode"):
            return node
    log.warning("no heat color map (%s) in the scene; overlays are shown in gray", ", ".join(names))
    return None


def style_overlay(volume_node, color_node=None, window: tuple[float, float] = (0.0, 1.0)) -> None:
    """Heat color map and a fixed window (0..1) on an overlay volume's display node."""
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    color_node = color_node if color_node is not None else heat_color_node(volume_node.GetScene())
    was_modifying = display.StartModify()
    try:
        if color_node is not None:
            display.SetAndObserveColorNodeID(color_node.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(*window)
    finally:
        display.EndModify(was_modifying)


def add_overlay_volume(scene, array: np.ndarray, reference_volume, name: str, color_node=None):
    """A new float32 scalar volume on `reference_volume`'s exact grid, styled as a heat map."""
    node = volume_from_array(scene, np.asarray(array, dtype=np.float32), reference_volume, name)
    style_overlay(node, color_node)
    return node


def _slice_composite_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def show_overlay(scene, overlay_node, opacity: float = 0.5, background_node=None) -> int:
    """Show `overlay_node` (None: nothing) as the foreground of every slice view, at `opacity` (0..1).

    Args:
        scene: the scene whose slice views change.
        overlay_node: the overlay volume, or None to clear the foreground.
        opacity: foreground opacity (the panel's slider).
        background_node: also set this volume as the background (None: keep each view's background).

    Returns:
        The number of slice views changed.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must be in [0, 1], got {opacity}")  # no tr: a caller's bug (slider 0..1)
    nodes = _slice_composite_nodes(scene)
    for composite in nodes:
        was_modifying = composite.StartModify()
        try:
            composite.SetForegroundVolumeID(overlay_node.GetID() if overlay_node is not None else None)
            composite.SetForegroundOpacity(opacity)
            if background_node is not None:
                composite.SetBackgroundVolumeID(background_node.GetID())
        finally:
            composite.EndModify(was_modifying)
    return len(nodes)


def set_overlay_opacity(scene, opacity: float) -> None:
    """The panel's opacity slider: foreground opacity of every slice view."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must be in [0, 1], got {opacity}")  # no tr: a caller's bug (slider 0..1)
    for composite in _slice_composite_nodes(scene):
        composite.SetForegroundOpacity(opacity)
