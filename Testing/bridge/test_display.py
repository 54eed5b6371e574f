"""Overlays in the slice views on the real Slicer core (no GUI: the views' slice composite nodes)."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from bridge_support import add_volume

from MedSegLib.display import add_overlay_volume, heat_color_node, set_overlay_opacity, show_overlay


def test_heat_map_overlay_in_every_slice_view(scene, hippocampus):
    array, geometry, _ = hippocampus
    volume = add_volume(scene, array, geometry, "hippo")
    assert heat_color_node(scene).GetName() == "PET-Heat"  # what the core has; Slicer also loads Inferno
    inferno = slicer.vtkMRMLColorTableNode()
    inferno.SetName("Inferno")
    inferno.SetTypeToWarm1()
    scene.AddNode(inferno)
    assert heat_color_node(scene) is inferno  # the application's perceptual map is preferred when present
    probability = np.linspace(0, 1, array.size, dtype=np.float32).reshape(array.shape)
    overlay = add_overlay_volume(scene, probability, volume, "probability")
    display = overlay.GetDisplayNode()
    assert display.GetColorNodeID() == inferno.GetID()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert np.array_equal(slicer.util.arrayFromVolume(overlay), probability)

    assert show_overlay(scene, overlay, 0.3, background_node=volume) == 3
    set_overlay_opacity(scene, 0.8)
    composites = [scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode") for n in range(3)]
    assert {(c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), c.GetForegroundOpacity()) for c in composites} == {
        (volume.GetID(), overlay.GetID(), 0.8)}
    show_overlay(scene, None)
    assert all(c.GetForegroundVolumeID() is None for c in composites)
    with pytest.raises(ValueError, match="opacity must be in"):
        set_overlay_opacity(scene, 1.5)
