"""Images and Slicer segmentations on disk: the engine's only voxel file I/O.

Arrays are indexed ``[k, j, i]`` (z, y, x) as SimpleITK's ``GetArrayFromImage`` gives them, with a
:class:`~medseg.geometry.Geometry` in ITK's LPS coordinates beside them.

- :func:`read_image` reads one 3D scalar volume (NIfTI, NRRD, MetaImage or a DICOM series folder) as
  float32; :func:`read_channels` stacks several on one voxel grid; :func:`check_volume` is the array check
  both use, public so that arrays from Slicer get the same errors.
- :func:`write_image` writes any scalar volume (label map, probability, uncertainty) atomically.
- :func:`write_segmentation` writes a Slicer ``.seg.nrrd`` (one labelmap layer with segment names,
  colors and terminology) that Slicer's ``vtkMRMLSegmentationStorageNode`` reads; :func:`read_segmentation`
  reads such a file back, whether written here or by Slicer.

Every error names the input and how to fix it. Nothing is ever left half-written: files are written to a
temporary name in the target folder, checked complete and renamed into place (``medseg.outputs``); the
writers' ``outputs=`` argument adds a file to a run's :class:`~medseg.outputs.OutputSet` instead, so that
all the files of one run appear together or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .card import Label
from .dicom_series import read_series
from .geometry import Geometry
from .nifti import check_nifti
from .outputs import OutputSet
from .text import printable

__all__ = [
    "READ_EXTENSIONS",
    "SEGMENTATION_EXTENSION",
    "WRITE_EXTENSIONS",
    "check_not_constant",
    "check_volume",
    "read_channels",
    "read_image",
    "read_segmentation",
    "terminology_from_tags",
    "terminology_string",
    "write_image",
    "write_json",
    "write_segmentation",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
READ_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
SEGMENTATION_EXTENSION = ".seg.nrrd"
SPACING_TOLERANCE_MM = 1e-4
ORIGIN_TOLERANCE_MM = 1e-4
DIRECTION_TOLERANCE = 1e-5

# Slicer's terminology contexts (the string format of vtkSlicerTerminologyEntry, 7 parts separated by '~'), named
# as in Slicer's SegmentationCategoryTypeModifier-DICOM-Master.json and AnatomicRegionAndModifier-DICOM-Master.json:
# the DICOM master list holds the SNOMED CT types of the bundled labels (Hippocampus, Left atrium); Slicer's
# "3D Slicer General Anatomy list" holds neither.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_TERMINOLOGY_PARTS = {1: "category", 2: "type", 3: "typeModifier", 5: "anatomicRegion", 6: "anatomicRegionModifier"}
_RESAMPLE_HINT = ("Resample channel {n} onto channel 1's grid, e.g. with Slicer's Resample Scalar/Vector/DWI Volume "
                  "(reference: channel 1) or SimpleITK.Resample(image, reference_image)")


# ---------------------------------------------------------------------------------------------- checks


def check_volume(array: np.ndarray, geometry: Geometry, name: str) -> None:
    """Refuse anything but a non-empty, finite 3D scalar volume on a grid with positive spacing.

    Args:
        array: voxels indexed ``[k, j, i]``.
        geometry: where they are; only its spacing is checked here.
        name: what the user knows the volume by (a path or a Slicer node name), used in the messages.

    Raises:
        ValueError: naming ``name``, the problem (shape, count of NaN/inf voxels, spacing) and the fix.
    """
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of voxels, got {type(array).__name__}")
    if array.ndim != 3:
        raise ValueError(f"{name} has shape {array.shape}: a 3D scalar volume indexed [k, j, i] is expected; "
                         f"{_shape_hint(array.ndim)}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: its shape {array.shape} has zero voxels; check that the file or node "
                         f"holds image data (re-export it)")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} has voxels of type {array.dtype}: real numbers are expected; convert it to a "
                         f"scalar (e.g. float32) volume")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        nan, inf = int(np.count_nonzero(np.isnan(array))), int(np.count_nonzero(np.isinf(array)))
        raise ValueError(f"{name} has {nan} NaN and {inf} infinite voxel(s) out of {array.size}; replace them "
                         f"(e.g. numpy.nan_to_num, or fix the reconstruction that produced them) before segmenting")
    spacing = tuple(geometry.spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{name} has voxel spacing {spacing} mm: spacing must be 3 positive numbers; fix the "
                         f"image header (e.g. SimpleITK's SetSpacing or Slicer's Volume Information) and save it again")


def check_not_constant(array: np.ndarray, name: str) -> None:
    """Refuse an image whose voxels all have one value: there is nothing to segment (label maps may be constant).

    Args:
        array: voxels of an input image (already through :func:`check_volume`).
        name: what the user knows the volume by, used in the message.

    Raises:
        ValueError: naming ``name``, the value and the likely causes.
    """
    low, high = np.min(array), np.max(array)
    if low == high:
        raise ValueError(f"{name} is constant (all {array.size} voxels are {float(low):g}): there is no image to "
                         f"segment; check that the right volume or series was given and that it was exported with "
                         f"its voxel data (a blank or failed export gives this)")


def _shape_hint(ndim: int) -> str:
    if ndim == 4:
        return ("split the 4D series into 3D volumes (e.g. SimpleITK: image[:, :, :, t]; Slicer: Sequences module) "
                "and give each as its own input channel")
    if ndim == 2:
        return "save the 2D image as a 3D volume with one slice (e.g. SimpleITK.JoinSeries([image]))"
    return "give a single 3D volume"


# ---------------------------------------------------------------------------------------------- reading


def read_image(path: PathLike) -> tuple[np.ndarray, Geometry]:
    """Read one 3D scalar volume.

    Args:
        path: a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``, ``.mhd``)
            file, or a folder holding a DICOM series (the largest series if it holds several).

    Returns:
        ``(array, geometry)``: float32 voxels ``(Z, Y, X)`` and their LPS geometry. A 4D image whose 4th
        dimension has size 1 is read as 3D.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported type, truncated or unreadable file, NaN/inf voxels (in a NIfTI counted in the file
            itself, see :mod:`medseg.nifti`), a non-finite NIfTI scaling, a sheared or scaled direction, a DICOM
            series that is not one regular grid (:mod:`medseg.dicom_series`), not a 3D scalar volume, no voxels,
            or invalid spacing; the message names ``path`` and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {path} does not exist; check the path (a {', '.join(READ_EXTENSIONS)} "
                                f"file or a DICOM series folder)")
    image = read_series(path) if path.is_dir() else _read_image_file(path)
    image = _as_3d_scalar(image, path)
    geometry = _geometry(image, path)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    check_volume(array, geometry, str(path))
    return array, geometry


def read_channels(paths: Sequence[PathLike]) -> tuple[np.ndarray, Geometry]:
    """Read the input channels of one case; they must share one voxel grid.

    Args:
        paths: one image per channel, in the model's channel order (a single path is one channel).

    Returns:
        ``(array, geometry)``: float32 ``(C, Z, Y, X)`` and the common geometry.

    Raises:
        ValueError: no paths, any :func:`read_image` error, or a channel on another grid (the message names
            both files, each differing property with both values, and how to resample).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no input images given; pass one image per input channel of the model")
    first, geometry = read_image(paths[0])
    arrays = [first]
    for n, path in enumerate(paths[1:], start=2):
        array, other = read_image(path)
        differences = _grid_differences(first.shape, geometry, array.shape, other)
        if differences:
            raise ValueError(f"channel {n} ({path}) is not on the voxel grid of channel 1 ({paths[0]}): "
                             f"{'; '.join(differences)}. {_RESAMPLE_HINT.format(n=n)}")
        arrays.append(array)
    return np.stack(arrays), geometry


def _grid_differences(shape1: tuple[int, ...], g1: Geometry, shape2: tuple[int, ...], g2: Geometry) -> list[str]:
    """Human-readable differences between two grids, empty when they match within the tolerances."""
    out = []
    if shape1 != shape2:
        out.append(f"size (x, y, z) {shape1[::-1]} vs {shape2[::-1]} voxels")
    checks = (("spacing", g1.spacing, g2.spacing, SPACING_TOLERANCE_MM, " mm"),
              ("origin", g1.origin, g2.origin, ORIGIN_TOLERANCE_MM, " mm (LPS)"),
              ("direction", g1.direction, g2.direction, DIRECTION_TOLERANCE, ""))
    for name, a, b, tol, unit in checks:
        if not np.allclose(a, b, rtol=0, atol=tol):
            out.append(f"{name} {_fmt(a)} vs {_fmt(b)}{unit}")
    return out


def _fmt(values) -> str:
    flat = np.asarray(values, dtype=float).ravel()
    return "(" + ", ".join(f"{v:.6g}" for v in flat) + ")"


def _extension(path: Path, allowed: Sequence[str]) -> str | None:
    name = path.name.lower()
    return next((ext for ext in sorted(allowed, key=len, reverse=True) if name.endswith(ext)), None)


def _itk_reason(exc: Exception) -> str:
    """The informative lines of an ITK exception, without its source-file prefixes."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))] or lines
    return " ".join(lines)[:300]


def _unreadable(path: Path, exc: Exception) -> ValueError:
    reason = _itk_reason(exc)
    if "spacing" in reason.lower():
        return ValueError(f"cannot read {path}: its voxel spacing is zero or invalid ({reason}); fix the spacing in "
                          f"the header (e.g. SimpleITK's SetSpacing or Slicer's Volume Information) and save it again")
    return ValueError(f"cannot read {path}: the file is truncated, corrupt or not a valid image ({reason}); "
                      f"export or download it again")


def _read_image_file(path: Path) -> sitk.Image:
    ext = _extension(path, READ_EXTENSIONS)
    if ext is None:
        hint = (" pass the folder that holds the DICOM series instead of one file"
                if path.suffix.lower() in (".dcm", ".ima") else " convert it (e.g. save it from Slicer as .nrrd)")
        raise ValueError(f"cannot read {path}: unsupported file type; MedSeg reads {', '.join(READ_EXTENSIONS)} "
                         f"files and DICOM series folders:{hint}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if ext in (".nii", ".nii.gz"):
            check_nifti(path)  # what ITK's NIfTI reader hides: NaN/inf voxels, bad scaling, truncation
        return reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None


def _as_3d_scalar(image: sitk.Image, path: Path) -> sitk.Image:
    size, components = image.GetSize(), image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise ValueError(f"{path} has {components} components per voxel (size {size}), e.g. an RGB image or a "
                         f"vector field: a 3D scalar volume is expected; extract one component (e.g. "
                         f"SimpleITK.VectorIndexSelectionCast) or convert it to grayscale")
    if image.GetDimension() == 4 and size[3] == 1:
        return sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0],
                            sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    if image.GetDimension() != 3:
        raise ValueError(f"{path} is a {image.GetDimension()}D image of size {size}: a 3D scalar volume is "
                         f"expected; {_shape_hint(image.GetDimension())}")
    return image


def _geometry(image: sitk.Image, path: Path) -> Geometry:
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{path} has voxel spacing {spacing} mm: spacing must be positive; fix the header (e.g. "
                         f"SimpleITK's SetSpacing or Slicer's Volume Information) and save it again")
    try:
        return Geometry.from_sitk(image)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- writing


def write_image(path: PathLike, array: np.ndarray, geometry: Geometry, *, compress: bool = True,
                outputs: OutputSet | None = None) -> Path:
    """Write a scalar volume (label map, probability, uncertainty, activation) atomically.

    Args:
        path: ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``; missing parent folders are created (unless
            ``outputs`` is given).
        array: voxels ``(Z, Y, X)``; the dtype is kept (bool is written as uint8, float16 as float32).
        geometry: the voxel grid.
        compress: gzip the voxels (``.nii`` is never compressed, ``.nii.gz`` always is).
        outputs: write into this :class:`~medseg.outputs.OutputSet` (renamed into place with the run's other
            outputs when the set is committed) instead of on its own.

    Returns:
        ``path``. On any error no file is created and an existing file is left as it was.

    Raises:
        ValueError: unsupported extension (the message lists the supported ones) or an invalid volume.
        OutputError: the file could not be written completely (an ``OSError`` naming ``path`` and the fix).
    """
    path = Path(path)
    ext = _extension(path, WRITE_EXTENSIONS)
    if ext is None:
        raise ValueError(f"cannot write {path}: unsupported file type; use one of {', '.join(WRITE_EXTENSIONS)} "
                         f"(or write_segmentation for a Slicer {SEGMENTATION_EXTENSION})")
    array = np.asarray(array)
    check_volume(array, geometry, str(path))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    _write_sitk(geometry.to_sitk(array), path, compress or ext == ".nii.gz", outputs)
    return path


def _write_sitk(image: sitk.Image, path: Path, compress: bool, outputs: OutputSet | None) -> None:
    """Into `outputs`, or on its own: a temporary in the same folder, checked complete, renamed into place."""
    if outputs is not None:
        outputs.write_image(path, image, compress)
        return
    with OutputSet(create_folders=True) as single:
        single.write_image(path, image, compress)


# ---------------------------------------------------------------------------------------------- segmentations


def write_segmentation(path: PathLike, labels: np.ndarray, geometry: Geometry, segments: Sequence[Label], *,
                       outputs: OutputSet | None = None) -> Path:
    """Write a label map as a Slicer ``.seg.nrrd`` with named, colored segments.

    One labelmap layer (segments cannot overlap): segment ``N`` is the voxels equal to its label id. Every
    ``Label`` becomes a segment (an absent label an empty one) except id 0, the background.

    Args:
        path: must end in ``.seg.nrrd``; missing parent folders are created.
        labels: integer label map ``(Z, Y, X)`` (uint8/uint16; other integer types are converted).
        geometry: the voxel grid of ``labels``.
        segments: what each label id is: name, color 0-255, optional SNOMED terminology.
        outputs: write into this :class:`~medseg.outputs.OutputSet` instead of on its own (see
            :func:`write_image`).

    Returns:
        ``path``, written atomically.

    Raises:
        ValueError: wrong extension, labels that are not a 3D integer map in 0..65535, duplicate ids, label
            values without a segment, or characters that Slicer's header format cannot hold.
    """
    path = Path(path)
    if not path.name.lower().endswith(SEGMENTATION_EXTENSION):
        raise ValueError(f"cannot write {path}: a Slicer segmentation file must end in {SEGMENTATION_EXTENSION}")
    labels = np.asarray(labels)
    check_volume(labels, geometry, str(path))
    labels = _label_map(labels, str(path))
    segments = _foreground_segments(segments, labels, path)
    dtype = np.uint8 if max([s.id for s in segments], default=0) <= 255 else np.uint16  # labels: these ids or 0
    image = geometry.to_sitk(labels.astype(dtype, copy=False))
    for key, value in _segmentation_metadata(labels, geometry, segments).items():
        image.SetMetaData(key, value)
    _write_sitk(image, path, True, outputs)
    return path


def _label_map(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name}: the label map has voxels of type {labels.dtype}; an integer label map is "
                         f"expected (e.g. numpy.rint(x).astype(numpy.uint8) or argmax of the probabilities)")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"{name}: label values must be in 0..65535, got {labels.min()}..{labels.max()}")
    return labels


def _foreground_segments(segments: Sequence[Label], labels: np.ndarray, path: Path) -> list[Label]:
    """The labels except the background, checked against the label map and Slicer's header syntax."""
    out = [s for s in segments if s.id != 0]
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids) or any(not 0 < i <= 65535 for i in ids):
        raise ValueError(f"cannot write {path}: segment ids must be unique integers in 1..65535, got {ids}")
    for s in out:
        _check_header_text(s, path)
    missing = sorted(set(np.unique(labels).tolist()) - set(ids) - {0})
    if missing:
        raise ValueError(f"cannot write {path}: label values {missing[:20]} occur in the label map but have no "
                         f"segment; add a Label for each or set those voxels to 0")
    return out


def _check_header_text(label: Label, path: Path) -> None:
    codes = [str(code.get(k, "")) for code in (label.terminology or {}).values() for k in ("scheme", "code", "meaning")]
    name = printable(label.name)  # the name is written cleaned (line breaks become spaces), codes as they are
    bad = [t for t in [name, *codes] if "\n" in t or "\r" in t] + [t for t in codes if set(t) & set("~^|")]
    if bad:
        raise ValueError(f"cannot write {path}: segment {label.id} has text {bad[0]!r} with a character that a "
                         f".seg.nrrd header cannot hold (a line break, or '~', '^', '|' in a terminology code)")


def _segmentation_metadata(labels: np.ndarray, geometry: Geometry, segments: Sequence[Label]) -> dict[str, str]:
    """The key/value fields of vtkMRMLSegmentationStorageNode for a single-layer labelmap."""
    extent = " ".join(map(str, _extent(labels)))
    ijk_to_ras = ";".join(f"{v:.17g}" for v in geometry.ijk_to_ras().ravel())
    whole = ";".join(str(v) for n in labels.shape[::-1] for v in (0, n - 1))
    meta = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": (f"Reference image geometry|{ijk_to_ras};{whole};|Image geometry "
                                              f"(IJK to RAS matrix and extent) of the segmentation&"),
    }
    for n, s in enumerate(segments):
        meta |= {
            f"Segment{n}_ID": f"Segment_{s.id}",
            f"Segment{n}_Name": printable(s.name),  # a line break here would add header fields
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{c / 255:.6g}" for c in s.color),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_Extent": extent,
            f"Segment{n}_Tags": f"TerminologyEntry:{terminology_string(s.terminology)}|" if s.terminology else "",
            f"Segment{n}_LabelValue": str(s.id),
            f"Segment{n}_Layer": "0",
        }
    return meta


def _extent(labels: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """``i0 i1 j0 j1 k0 k1`` of all non-zero voxels (the layer), or Slicer's empty extent ``0 -1 0 -1 0 -1``.

    Every segment gets the layer's extent, as Slicer itself writes: Slicer before 5.6.2 crops a shared layer to
    the extent of its first segment, so a per-segment bounding box would lose the other segments there.
    """
    mask = labels != 0
    if not mask.any():
        return (0, -1, 0, -1, 0, -1)
    out: list[int] = []
    for axis in (2, 1, 0):  # i, j, k
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out += [int(hits[0]), int(hits[-1])]
    return tuple(out)


def terminology_string(terminology: dict[str, dict[str, str]]) -> str:
    """Slicer's TerminologyEntry: context~category~type~typeModifier~anatomicContext~region~regionModifier."""
    parts = [TERMINOLOGY_CONTEXT, "", "", "", ANATOMIC_CONTEXT, "", ""]
    for index, key in _TERMINOLOGY_PARTS.items():
        code = terminology.get(key) or {}
        parts[index] = "^".join(str(code.get(k, "")) for k in ("scheme", "code", "meaning"))
    return "~".join(parts)


def read_segmentation(path: PathLike) -> tuple[np.ndarray, Geometry, list[Label]]:
    """Read a single-layer Slicer ``.seg.nrrd`` (written by :func:`write_segmentation` or by Slicer).

    Args:
        path: the ``.seg.nrrd`` file.

    Returns:
        ``(labels, geometry, segments)``: the label map ``(Z, Y, X)`` (uint8 or uint16) in which segment ``s``
        is ``labels == s.id``, its geometry, and one :class:`~medseg.card.Label` per segment in file order
        (name, color rounded to 0-255, terminology when the segment has a ``TerminologyEntry`` tag). The grid
        is the file's own: Slicer may have cropped it to the segments, so compare geometries before voxels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, several layers (overlapping segments), no segment fields, or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation {path} does not exist; give the path of a {SEGMENTATION_EXTENSION} "
                                f"file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None
    layers = image.GetNumberOfComponentsPerPixel()
    if layers > 1 or image.GetDimension() != 3:
        raise ValueError(f"{path} has {layers} layers (size {image.GetSize()}): overlapping segments are not "
                         f"supported yet; in Slicer remove the overlaps (Segment Editor) or export the segments to "
                         f"a labelmap volume, and save again")
    segments = _segments_from_metadata(image, path)
    array = sitk.GetArrayFromImage(image)
    labels = _label_map(array, str(path))
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    return labels.astype(dtype, copy=False), _geometry(image, path), segments


def _segments_from_metadata(image: sitk.Image, path: Path) -> list[Label]:
    keys = set(image.GetMetaDataKeys())
    segments: list[Label] = []
    n = 0
    while f"Segment{n}_ID" in keys:
        field = {k: image.GetMetaData(f"Segment{n}_{k}") for k in ("Name", "Color", "Tags", "LabelValue", "Layer")
                 if f"Segment{n}_{k}" in keys}
        if field.get("Layer", "0").strip() != "0":
            raise ValueError(f"{path}: segment {n} is in layer {field['Layer']}: overlapping segments are not "
                             f"supported yet; remove the overlaps in Slicer and save again")
        try:
            color = tuple(round(float(c) * 255) for c in field.get("Color", "0.5 0.5 0.5").split())
            label_id = int(field.get("LabelValue", n + 1))
        except ValueError:
            raise ValueError(f"{path}: segment {n} has an invalid color or label value") from None
        name = field.get("Name") or image.GetMetaData(f"Segment{n}_ID")
        segments.append(Label(label_id, name, color, terminology_from_tags(field.get("Tags", ""))))
        n += 1
    if not segments:
        raise ValueError(f"{path} has no segment fields (Segment0_ID, ...): it is a plain label map, not a Slicer "
                         f"segmentation; read it with read_image")
    return segments


def terminology_from_tags(tags: str) -> dict[str, dict[str, str]] | None:
    """The codes of a ``TerminologyEntry:...`` tag as a Label's terminology dict (None if absent)."""
    for tag in tags.split("|"):
        key, _, value = tag.partition(":")
        if key.strip() != "TerminologyEntry":
            continue
        parts = value.split("~")
        out = {}
        for index, name in _TERMINOLOGY_PARTS.items():
            code = [*parts[index].split("^"), "", "", ""][:3] if index < len(parts) else ["", "", ""]
            if any(code):
                out[name] = dict(zip(("scheme", "code", "meaning"), code, strict=True))
        return out if {"category", "type"} <= out.keys() else None
    return None


def write_json(path: PathLike, data: dict, *, outputs: OutputSet | None = None) -> None:
    """Write `data` as indented JSON atomically (a temporary file renamed in place), or into `outputs`."""
    text = json.dumps(data, indent=2)
    if outputs is not None:
        outputs.write_text(path, text)
        return
    with OutputSet() as single:
        single.write_text(path, text)
