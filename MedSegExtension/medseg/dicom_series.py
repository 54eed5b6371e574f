"""DICOM series folders: which files make the volume, in which order, and whether they form one regular grid.

GDCM (through SimpleITK's ``ImageSeriesReader``) stacks whatever files it is given and spreads them evenly
between the first and the last slice: a series with a missing slice comes back with an averaged spacing
(2.11 mm instead of 2.0 mm), a duplicated slice squeezes the others, and files of another orientation or size
are stacked as if they fitted. :func:`read_series` checks each file's own header first (ImagePositionPatient
along the ImageOrientationPatient normal, orientation, size, pixel spacing) and refuses a series that is not
one regular grid, naming the slice positions in mm and the fix. Exact duplicates (same position, identical
pixels, as a PACS sends an instance twice) are dropped with a warning. A series without UIDs is read with a
warning: it is a valid volume, but no DICOM SEG, SR or PACS can refer to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["SliceInfo", "read_series", "series_files", "slice_info"]

log = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4  # largest difference between two files' direction cosines
PIXEL_SPACING_TOLERANCE_MM = 1e-4
SLICE_SPACING_TOLERANCE = 0.01  # a slice step may differ from the median step by this fraction (1 %) ...
SLICE_SPACING_FLOOR_MM = 1e-3  # ... or by this many mm, whichever is larger (positions are stored as text)
_LISTED = 5  # problems named in one message
_REGULARIZE_HINT = ("or load it in Slicer's DICOM module with Acquisition geometry regularization set to 'harden "
                    "transform' and save the volume as .nrrd, which resamples it onto a regular grid")


@dataclass(frozen=True)
class SliceInfo:
    """What one file's header says about where its slice is."""

    path: str
    position: tuple[float, float, float] | None  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: row then column direction cosines
    size: tuple[int, int]  # (columns, rows)
    pixel_spacing: tuple[float, ...] | None
    sop_instance_uid: str
    rescale_problem: str | None = None  # a RescaleSlope/Intercept that GDCM would ignore silently


def _floats(reader: sitk.ImageFileReader, tag: str, count: int) -> tuple[float, ...] | None:
    if not reader.HasMetaDataKey(tag):
        return None
    try:
        values = tuple(float(v) for v in reader.GetMetaData(tag).strip().split("\\"))
    except ValueError:
        return None
    return values if len(values) == count and all(np.isfinite(values)) else None


def slice_info(path: str) -> SliceInfo:
    """Read one file's header (no pixels): position, orientation, size, pixel spacing, SOP Instance UID."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    size = reader.GetSize()
    uid = reader.GetMetaData("0008|0018").strip().strip("\0") if reader.HasMetaDataKey("0008|0018") else ""
    return SliceInfo(path, _floats(reader, "0020|0032", 3), _floats(reader, "0020|0037", 6), (size[0], size[1]),
                     _floats(reader, "0028|0030", 2), uid, _rescale_problem(reader))


def _rescale_problem(reader: sitk.ImageFileReader) -> str | None:
    """What is wrong with RescaleSlope (0028,1053) / RescaleIntercept (0028,1052), if present: GDCM reads a
    slope of 0 or NaN as if there were none, so the voxels would silently keep their stored values."""
    for tag, name in (("0028|1053", "RescaleSlope"), ("0028|1052", "RescaleIntercept")):
        if not reader.HasMetaDataKey(tag):
            continue
        text = reader.GetMetaData(tag).strip()
        try:
            value = float(text)
        except ValueError:
            return f"{name} {text!r} is not a number"
        if not np.isfinite(value) or (name == "RescaleSlope" and value == 0):
            return f"{name} is {text!r}"
    return None


def series_files(folder: Path) -> tuple[str, list[str]]:
    """The series to read from ``folder``: ``(series UID, files)``, the largest series when there are several."""
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for a folder without series
    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        files = {sid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in ids}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    files = {sid: names for sid, names in files.items() if names}
    if not files:
        raise ValueError(f"no DICOM series found in folder {folder}; give the folder that directly holds the DICOM "
                         f"files of one series, or an image file (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd)")
    chosen = max(files, key=lambda sid: len(files[sid]))
    if len(files) > 1:
        log.warning("%s holds %d DICOM series; reading the largest (%d files, series %r); give a folder with one "
                    "series to choose another", folder, len(files), len(files[chosen]), chosen)
    return chosen, files[chosen]


def read_series(folder: Path) -> sitk.Image:
    """Read the (largest) DICOM series in ``folder`` onto its true grid, or refuse it.

    Returns:
        The volume as GDCM reads it from the checked, position-sorted files (rescale slope/intercept applied).

    Raises:
        ValueError: naming ``folder``: no series; files of different orientations, sizes or pixel spacings;
            slices without a position; duplicated positions with different pixels; missing slices or uneven
            spacing (with the positions in mm along the slice normal); or an unreadable file. Each with the fix.
    """
    uid, files = series_files(folder)
    try:
        slices = [slice_info(f) for f in files]
    except RuntimeError as exc:
        raise ValueError(f"cannot read the DICOM series in {folder}: a file is truncated, corrupt or not an image "
                         f"({_first_line(exc)}); export the series again") from None
    _warn_missing_uids(folder, uid, slices)
    _check_rescale(folder, slices)
    if len(slices) > 1:
        _check_same_grid(folder, slices)
        listed = {Path(f).name for f in files}
        others = sorted(f.name for f in folder.iterdir() if f.is_file() and f.name not in listed)
        slices = _ordered_regular(folder, slices, others)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in slices])
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # the spacing was checked above, file by file
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ValueError(f"cannot read the DICOM series in {folder}: the files are truncated, corrupt or not a "
                         f"valid image ({_first_line(exc)}); export the series again") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith(("Exception", "/"))]
    return (lines or [str(exc)])[0][:200]


def _warn_missing_uids(folder: Path, series_uid: str, slices: Sequence[SliceInfo]) -> None:
    missing = sum(1 for s in slices if not s.sop_instance_uid)
    if series_uid.strip() and not missing:
        return
    what = [] if series_uid.strip() else ["no SeriesInstanceUID"]
    if missing:
        what.append(f"{missing} of {len(slices)} files without a SOPInstanceUID")
    log.warning("the DICOM series in %s has %s (anonymised?): it is read by slice position, but a DICOM SEG or SR "
                "cannot refer to it and a PACS will refuse results for it; restore the UIDs (export the series "
                "again from the PACS or the scanner) to use it with DICOM tools", folder, " and ".join(what))


def _check_rescale(folder: Path, slices: Sequence[SliceInfo]) -> None:
    bad = [s for s in slices if s.rescale_problem]
    if bad:
        names = ", ".join(f"{Path(s.path).name} ({s.rescale_problem})" for s in bad[:_LISTED])
        raise ValueError(f"cannot read the DICOM series in {folder}: {len(bad)} file(s) have an invalid intensity "
                         f"rescale, so their intensities are undefined: {names}; export the series again (a slope "
                         f"must be a finite, non-zero number)")


def _check_same_grid(folder: Path, slices: Sequence[SliceInfo]) -> None:
    """Every file must have a position and the first file's orientation, size and pixel spacing."""
    first = slices[0]
    for s in slices:
        if s.position is None or s.orientation is None:
            raise ValueError(f"cannot read the DICOM series in {folder}: {Path(s.path).name} has no valid "
                             f"ImagePositionPatient (0020,0032) or ImageOrientationPatient (0020,0037), so its slice "
                             f"cannot be placed; export the series again from the scanner or PACS")
        problems = []
        if not np.allclose(s.orientation, first.orientation, rtol=0, atol=ORIENTATION_TOLERANCE):
            problems.append(f"orientation {_fmt(s.orientation)} vs {_fmt(first.orientation)}")
        if s.size != first.size:
            problems.append(f"size {s.size[0]} x {s.size[1]} vs {first.size[0]} x {first.size[1]} pixels")
        if (s.pixel_spacing is None) != (first.pixel_spacing is None) or (
                s.pixel_spacing is not None and not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=0,
                                                                atol=PIXEL_SPACING_TOLERANCE_MM)):
            problems.append(f"pixel spacing {s.pixel_spacing} vs {first.pixel_spacing} mm")
        if problems:
            raise ValueError(f"cannot read the DICOM series in {folder}: its files are not slices of one volume: "
                             f"{Path(s.path).name} differs from {Path(first.path).name} in {'; '.join(problems)}; "
                             f"put each series (or each orientation of a localizer) in its own folder and give the "
                             f"folder of the one to segment")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def _ordered_regular(folder: Path, slices: list[SliceInfo], others: Sequence[str] = ()) -> list[SliceInfo]:
    """The slices sorted along the normal, exact duplicates dropped; refuse other duplicates, gaps and unevenness."""
    normal = _normal(slices[0].orientation)
    along = {s.path: float(np.dot(s.position, normal)) for s in slices}
    slices = sorted(slices, key=lambda s: along[s.path])
    positions = np.array([along[s.path] for s in slices])
    steps = np.diff(positions)
    moving = steps[steps > SLICE_SPACING_FLOOR_MM]
    step = float(np.median(moving)) if moving.size else 0.0
    duplicate = steps <= max(SLICE_SPACING_FLOOR_MM, SLICE_SPACING_TOLERANCE * step)
    if duplicate.any():
        slices = _drop_exact_duplicates(folder, slices, duplicate, positions)
        positions = np.array([along[s.path] for s in slices])
        steps = np.diff(positions)
    _check_even(folder, positions, steps, step, others)
    return slices


def _drop_exact_duplicates(folder: Path, slices: list[SliceInfo], duplicate: np.ndarray,
                           positions: np.ndarray) -> list[SliceInfo]:
    keep, dropped, different = [slices[0]], [], []
    for n in range(1, len(slices)):
        if not duplicate[n - 1]:
            keep.append(slices[n])
        elif _same_pixels(keep[-1].path, slices[n].path):
            dropped.append(slices[n])
        else:
            different.append(f"{Path(keep[-1].path).name} and {Path(slices[n].path).name} at {positions[n]:.6g} mm")
    if different:
        listed = "; ".join(different[:_LISTED]) + (f"; and {len(different) - _LISTED} more" if len(different) >
                                                    _LISTED else "")
        raise ValueError(f"cannot read the DICOM series in {folder}: {len(different)} slice position(s) along the "
                         f"slice normal hold two files with different pixels: {listed}; the folder mixes two "
                         f"acquisitions (or echoes/phases) of one series: put each in its own folder, or remove the "
                         f"wrong files")
    if dropped:
        log.warning("the DICOM series in %s has %d exact duplicate slice(s) (same position, identical pixels): %s; "
                    "each is read once", folder, len(dropped), ", ".join(Path(s.path).name for s in dropped[:_LISTED]))
    return keep


def _same_pixels(a: str, b: str) -> bool:
    try:
        return bool(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(a)),
                                   sitk.GetArrayFromImage(sitk.ReadImage(b))))
    except RuntimeError:
        return False


def _check_even(folder: Path, positions: np.ndarray, steps: np.ndarray, step: float,
                others: Sequence[str] = ()) -> None:
    """Refuse steps that differ from the median step: missing slices or uneven spacing, named by position."""
    if steps.size == 0:
        return
    tolerance = max(SLICE_SPACING_FLOOR_MM, SLICE_SPACING_TOLERANCE * step)
    bad = np.flatnonzero(np.abs(steps - step) > tolerance)
    if bad.size == 0:
        return
    gaps = [n for n in bad if steps[n] > 1.5 * step]
    described = []
    for n in bad[:_LISTED]:
        a, b, d = positions[n], positions[n + 1], steps[n]
        missing = f", about {round(d / step) - 1} slice(s) missing" if n in gaps else ""
        described.append(f"{a:.6g} -> {b:.6g} mm ({d:.4g} mm{missing})")
    more = f"; and {bad.size - _LISTED} more" if bad.size > _LISTED else ""
    average = (positions[-1] - positions[0]) / (positions.size - 1)
    kind = "has missing slices" if gaps else "is unevenly spaced"
    fix = ("add the missing files (export the complete series again from the scanner or PACS), "
           if gaps else "export the series again, ")
    if gaps and others:
        fix = (f"{len(others)} other file(s) in the folder are not part of the series ({', '.join(others[:3])}"
               f"{', ...' if len(others) > 3 else ''}): if the missing slices are among them they are unreadable "
               f"or belong to another series; " + fix)
    raise ValueError(f"cannot read the DICOM series in {folder}: it {kind}: slice positions along the slice normal "
                     f"step by {step:.4g} mm except {'; '.join(described)}{more}. Reading it as one volume would "
                     f"spread the slices at an average {average:.4g} mm and misplace them; {fix}{_REGULARIZE_HINT}")
