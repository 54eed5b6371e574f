"""Volume nodes <-> engine arrays and geometry records.

The engine works on numpy arrays indexed ``[k, j, i]`` with a :class:`~medseg.geometry.Geometry` in LPS; Slicer
keeps voxels in a ``vtkImageData`` with an IJK-to-RAS matrix and, optionally, parent transforms.

Parent transforms: a volume under a *linear* transform is read in world coordinates (the transform composed with
its IJK-to-RAS matrix), so the engine sees the spacing and position the user sees; results are put back under the
same transform on the volume's own voxel grid, so they stay voxel-exact on it. A non-linear transform (grid,
B-spline, thin-plate) would need resampling and is refused with a clear message: harden or resample first. A
linear transform that shears or scales the axes unevenly leaves no orthonormal voxel grid and is refused too.

Nothing here changes the scene except :func:`volume_from_array` (adds a node) and :func:`update_volume_from_array`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from medseg.geometry import LPS_TO_RAS, Geometry
from medseg.io import DIRECTION_TOLERANCE, ORIGIN_TOLERANCE_MM, SPACING_TOLERANCE_MM, check_volume

from .i18n import tr as _

__all__ = [
    "SCALAR_VOLUME_CLASSES",
    "array_from_volume",
    "arrays_from_volumes",
    "geometry_from_volume",
    "image_data_from_array",
    "matrix_from_vtk",
    "roi_from_ijk_box",
    "roi_to_ijk_box",
    "update_volume_from_array",
    "volume_from_array",
    "world_ijk_to_ras",
]

log = logging.getLogger(__name__)

SCALAR_VOLUME_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode")
def _harden_hint() -> str:
    return _("harden the transform (Data module: right-click the volume > 'Harden transform') or resample the "
             "volume (Resample Scalar/Vector/DWI Volume), then segment the result")


def _name(node) -> str:
    return node.GetName() if node is not None else "(none)"


def matrix_from_vtk(vtk_matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix_from_array(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def world_ijk_to_ras(node) -> np.ndarray:
    """4x4 matrix from the node's voxel indices (i, j, k) to world RAS, parent transforms included.

    Raises:
        ValueError: the node is under a non-linear transform.
    """
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = matrix_from_vtk(m)
    parent = node.GetParentTransformNode()
    if parent is None:
        return ijk_to_ras
    if not parent.IsTransformToWorldLinear():
        raise ValueError(_("volume {volume!r} is under the non-linear transform {transform!r}: MedSeg segments "
                           "voxels on a regular grid; {hint}").format(volume=_name(node), transform=_name(parent),
                                                                      hint=_harden_hint()))
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return matrix_from_vtk(to_world) @ ijk_to_ras


def geometry_from_volume(node) -> Geometry:
    """The node's voxel grid in world coordinates as an engine :class:`Geometry` (LPS)."""
    matrix = world_ijk_to_ras(node)
    axes = matrix[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(axes)):
        raise ValueError(_("volume {volume!r} has voxel spacing {spacing} mm: spacing must be positive; fix it in "
                           "the Volumes module (Volume Information)").format(volume=_name(node),
                                                                             spacing=tuple(spacing)))
    direction = axes / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        parent = node.GetParentTransformNode()
        raise ValueError(_("volume {volume!r}: its parent transform {transform!r} shears or scales the voxel axes "
                           "unevenly, so they are no longer perpendicular; {hint} (resampling)").format(
            volume=_name(node), transform=_name(parent), hint=_harden_hint()))
    return Geometry.from_ijk_to_ras(matrix)


def _sequence_of(node):
    """(browser, sequence) when `node` is the proxy (current frame) of a sequence browser, else None."""
    scene = node.GetScene()
    if scene is None:
        return None
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
        sequence = browser.GetSequenceNode(node)
        if sequence is not None:
            return browser, sequence
    return None


def check_scalar_volume(node, what: str = "input volume", allow_single_slice: bool = False) -> None:
    """Refuse what the engine cannot segment, with a message naming the node and the fix.

    Args:
        node: the volume node (may be None).
        what: what the user picked it as ("input volume", "channel 'T2w'").
        allow_single_slice: accept a volume of one slice (for 2D models).

    Raises:
        ValueError: no node, not a scalar volume (vector, tensor, diffusion), a sequence frame (4D), no voxels,
            or a single slice.
    """
    if node is None:
        raise ValueError(_("no {what} selected; pick a volume in the panel (load one with Add Data or a DICOM "
                           "series first)").format(what=what))
    if not node.IsA("vtkMRMLVolumeNode"):
        raise ValueError(_("{what} {name!r} is a {kind}, not a volume; pick an image volume").format(
            what=what, name=_name(node), kind=node.GetClassName()))
    image = node.GetImageData()
    components = image.GetNumberOfScalarComponents() if image is not None else 1
    if node.GetClassName() not in SCALAR_VOLUME_CLASSES or components != 1:
        raise ValueError(_("{what} {name!r} is a {kind} with {components} component(s) per voxel (a vector, color "
                           "or diffusion volume): a scalar volume is expected; extract one component or convert it "
                           "to a scalar volume (Vector to Scalar Volume module)").format(
            what=what, name=_name(node), kind=node.GetClassName(), components=components))
    frames = _sequence_of(node)
    if frames is not None:
        browser, sequence = frames
        raise ValueError(_("{what} {name!r} is the current frame of the 4D sequence {sequence!r} ({frames} frames, "
                           "browser {browser!r}): pick one frame and segment a copy of it (Data module: right-click "
                           "> Clone), or give each frame as its own volume").format(
            what=what, name=_name(node), sequence=_name(sequence), frames=sequence.GetNumberOfDataNodes(),
            browser=_name(browser)))
    if image is None or image.GetNumberOfPoints() == 0 or image.GetPointData().GetScalars() is None:
        raise ValueError(_("{what} {name!r} has no voxels; load the image again").format(what=what,
                                                                                         name=_name(node)))
    dims = image.GetDimensions()
    if not allow_single_slice and min(dims) == 1:
        raise ValueError(_("{what} {name!r} is a single slice ({i} x {j} x {k} voxels, a 2D image): this model "
                           "segments 3D volumes; load the whole series (all slices) as one volume").format(
            what=what, name=_name(node), i=dims[0], j=dims[1], k=dims[2]))


def array_from_volume(node, what: str = "input volume",
                      allow_single_slice: bool = False) -> tuple[np.ndarray, Geometry]:
    """A scalar volume node -> (float32 copy of its voxels ``(Z, Y, X)``, its world geometry).

    The array is a copy: it can be handed to a worker thread while the user keeps editing the scene.
    """
    check_scalar_volume(node, what, allow_single_slice)
    geometry = geometry_from_volume(node)
    array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32, copy=True)
    check_volume(array, geometry, f"{what} {_name(node)!r}")
    return array, geometry


def _grid_differences(a, ga: Geometry, b, gb: Geometry) -> list[str]:
    """What differs between the grids of two nodes, in RAS (what the Volumes module shows)."""
    out = []
    if a.shape != b.shape:
        out.append(f"size {a.shape[::-1]} vs {b.shape[::-1]} voxels (i, j, k)")
    checks = (("spacing", ga.spacing, gb.spacing, SPACING_TOLERANCE_MM, " mm"),
              ("origin", LPS_TO_RAS @ ga.origin, LPS_TO_RAS @ gb.origin, ORIGIN_TOLERANCE_MM, " mm (RAS)"),
              ("direction", LPS_TO_RAS @ ga.direction, LPS_TO_RAS @ gb.direction, DIRECTION_TOLERANCE, " (RAS)"))
    for name, x, y, tol, unit in checks:
        if not np.allclose(x, y, rtol=0, atol=tol):
            fx = ", ".join(f"{v:.6g}" for v in np.ravel(x))
            fy = ", ".join(f"{v:.6g}" for v in np.ravel(y))
            out.append(f"{name} ({fx}) vs ({fy}){unit}")
    return out


def arrays_from_volumes(nodes: Sequence, names: Sequence[str] | None = None,
                        allow_single_slice: bool = False) -> tuple[np.ndarray, Geometry]:
    """Channel volume nodes -> (float32 ``(C, Z, Y, X)``, the common world geometry).

    Args:
        nodes: one scalar volume node per model input channel, in the model's channel order.
        names: the channels' names (the model card's), used in messages.

    Raises:
        ValueError: any :func:`array_from_volume` refusal, or a channel on another voxel grid than the first
            (the message names both nodes and each differing property).
    """
    nodes = list(nodes)
    if not nodes:
        raise ValueError(_("no input volume selected; pick a volume in the panel"))
    names = list(names) if names is not None else [_("channel {n}").format(n=n + 1) for n in range(len(nodes))]
    what = [_("input volume for {name!r}").format(name=n) if len(nodes) > 1 else _("input volume") for n in names]
    first, geometry = array_from_volume(nodes[0], what[0], allow_single_slice)
    arrays = [first]
    for node, label in zip(nodes[1:], what[1:], strict=True):
        array, other = array_from_volume(node, label, allow_single_slice)
        differences = _grid_differences(first, geometry, array, other)
        if differences:
            raise ValueError(_("volumes {first!r} ({first_label}) and {other!r} ({other_label}) are on different "
                               "voxel grids: {differences}. Resample {other!r} onto {first!r} (Resample "
                               "Scalar/Vector/DWI Volume, or Resample Image (BRAINS) with {first!r} as reference) "
                               "and pick the resampled volume").format(
                first=_name(nodes[0]), first_label=names[0], other=_name(node), other_label=label,
                differences="; ".join(differences)))
        arrays.append(array)
    return np.stack(arrays), geometry


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """A ``vtkImageData`` (origin 0, spacing 1, as volume nodes keep it) holding a copy of `array` ``(Z, Y, X)``."""
    array = np.ascontiguousarray(array)
    if array.ndim != 3:
        raise ValueError(f"a volume needs a 3D array indexed [k, j, i], got shape {array.shape}")  # no tr: a bug
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[::-1])
    image.AllocateScalars(numpy_support.get_vtk_array_type(array.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
    return image


def _check_fits(reference, shape: tuple[int, ...]) -> None:
    if isinstance(reference, Geometry):
        return
    image = reference.GetImageData() if reference is not None else None
    dims = tuple(image.GetDimensions()) if image is not None else None
    if dims != tuple(shape[::-1]):
        raise ValueError(f"array of shape {tuple(shape)} (k, j, i) does not fit the grid of volume "  # no tr: a bug
                         f"{_name(reference)!r} ({dims} voxels i, j, k)")


def _set_geometry(node, reference) -> None:
    if isinstance(reference, Geometry):
        node.SetIJKToRASMatrix(vtk_matrix_from_array(reference.ijk_to_ras()))
        node.SetAndObserveTransformNodeID(None)
    else:
        node.CopyOrientation(reference)
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())


def update_volume_from_array(node, array: np.ndarray, reference) -> None:
    """Set a volume node's voxels to a copy of `array` on the grid of `reference`.

    Args:
        node: the volume node to fill.
        array: voxels ``(Z, Y, X)``.
        reference: a volume node (its IJK-to-RAS matrix and parent transform are copied: the result lies voxel
            on voxel on it) or a :class:`Geometry` (world coordinates, no parent transform).
    """
    array = np.asarray(array)
    _check_fits(reference, array.shape)
    image = image_data_from_array(array)
    was_modifying = node.StartModify()
    try:
        _set_geometry(node, reference)
        node.SetAndObserveImageData(image)
    finally:
        node.EndModify(was_modifying)


def volume_from_array(scene, array: np.ndarray, reference, name: str,
                      class_name: str = "vtkMRMLScalarVolumeNode"):
    """Add a new volume node holding `array` with the exact geometry of `reference` (see
    :func:`update_volume_from_array`); it has default display nodes."""
    array = np.asarray(array)
    _check_fits(reference, array.shape)  # before touching the scene: a bad array changes nothing
    image = image_data_from_array(array)
    node = scene.AddNewNodeByClass(class_name, name)
    _set_geometry(node, reference)
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    return node


# ---------------------------------------------------------------------------------------------- region of interest


def roi_to_ijk_box(roi_node, volume_node) -> tuple[int, int, int, int, int, int]:
    """A markups ROI -> the half-open voxel box ``(i0, i1, j0, j1, k0, k1)`` of the volume that it covers.

    Every voxel whose extent overlaps the ROI's box (rotated or not, parent transforms of both included) is in;
    the box is clipped to the volume.

    Raises:
        ValueError: the ROI has no size or lies outside the volume.
    """
    if roi_node is None:
        raise ValueError(_("no region of interest given"))
    size = tuple(roi_node.GetSize())
    if min(size) <= 0:
        raise ValueError(_("region of interest {roi!r} has size {size} mm: place it (Markups module) so that it has "
                           "a size on every axis").format(roi=_name(roi_node), size=tuple(size)))
    bounds = [0.0] * 6
    roi_node.GetObjectBounds(bounds)
    corners = np.array([[x, y, z, 1.0] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])
    world = corners @ matrix_from_vtk(roi_node.GetObjectToWorldMatrix()).T
    ijk = world @ np.linalg.inv(world_ijk_to_ras(volume_node)).T
    lo, hi = np.round(ijk[:, :3].min(axis=0), 6), np.round(ijk[:, :3].max(axis=0), 6)
    dims = volume_node.GetImageData().GetDimensions()
    box = []
    for axis in range(3):
        start = max(0, math.floor(lo[axis] - 0.5) + 1)  # first voxel whose extent [i - 0.5, i + 0.5] overlaps
        stop = min(dims[axis], math.ceil(hi[axis] + 0.5))  # one past the last one
        if start >= stop:
            raise ValueError(_("region of interest {roi!r} is outside volume {volume!r} (on axis {axis} it covers "
                               "voxels {low:.1f} to {high:.1f} of 0 to {last}); move it over the volume (Markups "
                               "module, or 'Fit to volume')").format(
                roi=_name(roi_node), volume=_name(volume_node), axis="ijk"[axis], low=lo[axis], high=hi[axis],
                last=dims[axis] - 1))
        box += [start, stop]
    if any(b != full for b, full in zip(box, [0, dims[0], 0, dims[1], 0, dims[2]], strict=True)):
        log.info("region of interest %s: voxels %s of volume %s", _name(roi_node), box, _name(volume_node))
    return tuple(int(b) for b in box)


ROI_INSET_VOXELS = 1e-3  # faces this far inside the box's voxel boundaries, so rounding never adds a voxel


def roi_from_ijk_box(scene, volume_node, box: Sequence[int], name: str = "MedSeg box", roi_node=None):
    """The markups ROI covering exactly the voxels ``box`` (half-open ``(i0, i1, j0, j1, k0, k1)``) of a volume:
    along the volume's axes (oblique ones too, parent transforms included), faces on the voxel boundaries, so
    :func:`roi_to_ijk_box` gives `box` back. For a front end where the box is typed rather than drawn.

    Args:
        roi_node: an ROI node to move there (None: a new one named `name` is added to `scene`).

    Raises:
        ValueError: a bound that is not a whole number, or a box not inside the volume (naming the axis and the
            voxels it has).
    """
    dims = volume_node.GetImageData().GetDimensions()
    if len(box) != 6 or any(isinstance(b, bool) or int(b) != b for b in box):
        raise ValueError(_("voxel box {box} must be six whole numbers (i0, i1, j0, j1, k0, k1)").format(box=list(box)))
    box = [int(b) for b in box]
    for axis in range(3):
        start, stop = box[2 * axis], box[2 * axis + 1]
        if not 0 <= start < stop <= dims[axis]:
            raise ValueError(_("voxel box on axis {axis} from {first} to {last} is not inside volume {volume!r}, "
                               "which has voxels 0 to {end} there; give a first voxel no larger than the last, both "
                               "within that range").format(axis="ijk"[axis], first=start, last=stop - 1,
                                                           volume=_name(volume_node), end=dims[axis] - 1))
    ijk_to_ras = world_ijk_to_ras(volume_node)
    low = np.array(box[0::2], dtype=float) - 0.5 + ROI_INSET_VOXELS
    high = np.array(box[1::2], dtype=float) - 0.5 - ROI_INSET_VOXELS
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    rotation = ijk_to_ras[:3, :3] / spacing
    if np.linalg.det(rotation) < 0:  # a box is symmetric: flip one axis to keep a proper rotation
        rotation[:, 0] *= -1
    object_to_world = np.eye(4)
    object_to_world[:3, :3] = rotation
    object_to_world[:3, 3] = (ijk_to_ras @ [*((low + high) / 2), 1.0])[:3]
    roi = roi_node if roi_node is not None else scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetAndObserveTransformNodeID(None)
    roi.SetAndObserveObjectToNodeMatrix(vtk_matrix_from_array(object_to_world))
    roi.SetSize(*((high - low) * spacing))
    return roi
