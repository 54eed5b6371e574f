"""A scene as the Slicer application has it, for the bridge without the application (tests, benchmarks).

What Slicer does at start-up and a script on the Slicer core (``pip install slicer-core``) must do by hand:
register the segmentation converter rules (once, before the first segmentation node), load the built-in
color tables (``vtkSlicerColorLogic``), create the subject hierarchy, and have three slice views (their
``vtkMRMLSliceNode`` in the axial, sagittal and coronal orientation presets, and ``vtkMRMLSliceCompositeNode``).
``slicer.mrmlScene`` is pointed at the scene because ``slicer.util`` reads it.
Inside the application none of this is needed: the module never imports this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["application_scene", "register_converter_rules"]

SLICE_VIEWS = ("Red", "Yellow", "Green")
SLICE_ORIENTATIONS = ("Axial", "Sagittal", "Coronal")


def register_converter_rules() -> None:
    """Register the labelmap <-> closed surface rules with the converter factory, each once."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule.__name__ not in registered:
            factory.RegisterConverterRule(rule())


def _slice_node(scene, view: str, orientation: str):
    """A slice view's node as the layout manager makes it: named after its view, in its default orientation."""
    node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # from the scene's default node: the orientation presets
    node.UnRegister(None)  # the caller's scene.AddNode holds it
    node.SetName(view)
    node.SetLayoutName(view)
    node.SetDefaultOrientation(orientation)
    node.SetOrientation(orientation)
    return node


@contextmanager
def application_scene() -> Iterator[object]:
    """Yield a fresh ``vtkMRMLScene`` set up as the application's; cleared, and ``slicer.mrmlScene`` restored, after.

    The color logic lives as long as the block (it owns the color tables). Without the application it logs
    "FindDefaultColorFiles failed"; the built-in tables are there all the same.
    """
    import slicer

    register_converter_rules()
    previous = getattr(slicer, "mrmlScene", None)
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for view, orientation in zip(SLICE_VIEWS, SLICE_ORIENTATIONS, strict=True):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(view)
        scene.AddNode(composite)
        scene.AddNode(_slice_node(scene, view, orientation))
    try:
        yield scene
    finally:
        colors.SetMRMLScene(None)
        scene.Clear(1)
        slicer.mrmlScene = previous
