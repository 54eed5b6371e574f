"""Helpers for the bridge tests: volume nodes built as Slicer's loader builds them, tiny checkpoints, scene
snapshots. Imported by the tests (conftest.py skips this folder when the Slicer core is missing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import slicer
import torch
import vtk
from card_support import card_dict as shared_card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.geometry import Geometry
from medseg.models import build_model
from MedSegLib.selftest import calibrate_head


def add_volume(scene, array: np.ndarray, geometry: Geometry, name: str, study: str | None = "Study",
               class_name: str = "vtkMRMLScalarVolumeNode"):
    """A volume node built as Slicer's loader does (independently of the bridge), under a study item."""
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras()))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = sh.GetSceneItemID()
    if study is not None:
        parent = sh.GetItemChildWithName(parent, study) or sh.CreateStudyItem(parent, study)
    sh.CreateItem(parent, node)
    return node


# ---------------------------------------------------------------------------------------------- models


def card_dict(model, channels=("T1w",)) -> dict:
    """The tests' hippocampus-like card, random weights, no metrics, with as many MR channels as asked."""
    card = shared_card_dict(model, channels)
    del card["metrics"]
    card.update(summary="A tiny random-weight test network", training={"dataset": "none (random weights)",
                                                                        "license": "CC0"},
                patch_size=[16, 32, 16])  # smaller than the sample: several windows, so cancel can land between them
    return card


def make_checkpoint(path: Path, channels=("T1w",), calibration: np.ndarray | None = None) -> Path:
    """A tiny random-weight U-Net; with `calibration` (an image), its head is set so that the labels are not all
    background (MedSegLib.selftest.calibrate_head)."""
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=len(channels), num_classes=3, width=0.0625,
                        depth=3).eval()
    if calibration is not None:
        calibrate_head(model, calibration)
    return save_checkpoint(path, model, ModelCard.from_dict(card_dict(model, channels)))


# ---------------------------------------------------------------------------------------------- scene snapshots


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _segments(node) -> list:
    segmentation = node.GetSegmentation()
    out = []
    for n in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(sid)
        image = segment.GetRepresentation("Binary labelmap")
        voxels = (slicer.util.arrayFromSegmentInternalBinaryLabelmap(node, sid)
                  if image is not None and image.GetPointData().GetScalars() is not None else None)
        out.append((sid, segment.GetName(), segment.GetLabelValue(), tuple(round(c, 6) for c in segment.GetColor()),
                    None if voxels is None else _digest(voxels)))
    return out


def _attributes_and_references(node) -> list:
    names = vtk.vtkStringArray()
    node.GetAttributeNames(names)
    roles = [node.GetNthNodeReferenceRole(n) for n in range(node.GetNumberOfNodeReferenceRoles())]
    attributes = [names.GetValue(i) for i in range(names.GetNumberOfValues())]
    references = {role: tuple(node.GetNthNodeReferenceID(role, i) for i in range(node.GetNumberOfNodeReferences(role)))
                  for role in roles}
    return [sorted((name, node.GetAttribute(name)) for name in attributes), sorted(references.items())]


def _display(node) -> list:
    if node.IsA("vtkMRMLScalarVolumeDisplayNode"):
        return [node.GetColorNodeID(), node.GetWindow(), node.GetLevel(), node.GetAutoWindowLevel()]
    if node.IsA("vtkMRMLSegmentationDisplayNode"):
        segmentation = node.GetDisplayableNode().GetSegmentation()
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        return [(sid, tuple(round(c, 6) for c in node.GetSegmentOverrideColor(sid)), node.GetSegmentVisibility(sid),
                 node.GetSegmentOpacity3D(sid)) for sid in ids]
    return []


def snapshot(scene, times: bool = True) -> dict:
    """Every node: class, name, modified time (unless `times` is False) and a digest of its content (voxels,
    segments, table cells, slice-view layers, subject hierarchy items); without times also its attributes, node
    references and display properties, to compare content that was changed and put back."""
    out = {}
    for n in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(n)
        entry = [node.GetClassName(), node.GetName(), node.GetMTime()] if times else [
            node.GetClassName(), node.GetName(), _attributes_and_references(node), _display(node)]
        if node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None:
            m = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(m)
            entry.append(_digest(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVTKMatrix(m)))
        elif node.IsA("vtkMRMLSegmentationNode"):
            entry.append(_segments(node))
        elif node.IsA("vtkMRMLTableNode"):
            table = node.GetTable()
            entry.append([[table.GetValue(r, c).ToString() for c in range(table.GetNumberOfColumns())]
                          for r in range(table.GetNumberOfRows())])
        elif node.IsA("vtkMRMLSliceCompositeNode"):
            entry.append((node.GetBackgroundVolumeID(), node.GetForegroundVolumeID(), node.GetForegroundOpacity()))
        elif node.IsA("vtkMRMLSubjectHierarchyNode"):
            items = vtk.vtkIdList()
            node.GetItemChildren(node.GetSceneItemID(), items, True)
            entry.append(sorted((node.GetItemName(items.GetId(i)), node.GetItemParent(items.GetId(i)))
                                for i in range(items.GetNumberOfIds())))
        out[node.GetID()] = entry
    return out


# ---------------------------------------------------------------------------------------------- results without a model


def synthetic_result(image: np.ndarray, geometry: Geometry, labels: np.ndarray, card: ModelCard,
                     uncertainty: bool = False):
    """A SegmentationResult made from a known label map (no network): measured as the engine measures, with
    one-hot probabilities (so soft volume == volume) and, if asked, an uncertainty map."""
    from medseg.inference import SegmentationResult
    from medseg.measure import measure_labels

    probabilities = np.stack([(labels == label.id).astype(np.float32) for label in card.labels])
    measurements = measure_labels(labels, geometry, card.labels, image=image, probabilities=probabilities,
                                  volume_passes_ml={lab.id: [0.9 * (labels == lab.id).sum() * geometry.voxel_volume_ml,
                                                             1.1 * (labels == lab.id).sum() * geometry.voxel_volume_ml]
                                                    for lab in card.foreground_labels})
    result = SegmentationResult(labels, geometry, card, measurements=measurements)
    if uncertainty:
        result.entropy = np.linspace(0, 1, labels.size, dtype=np.float32).reshape(labels.shape)
    return result


def hippocampus_card() -> ModelCard:
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    return ModelCard.from_dict(card_dict(model))


def application_modules(scene):
    """``slicer.modules`` with ``volumes.logic()`` and ``segmentations.logic()`` as the application provides them,
    made of the core logics, so that user-script helpers such as ``slicer.util.updateSegmentBinaryLabelmapFromArray``
    run (set it with monkeypatch)."""
    from types import SimpleNamespace

    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    return SimpleNamespace(volumes=SimpleNamespace(logic=lambda: volumes),
                           segmentations=SimpleNamespace(logic=lambda: segmentations))
