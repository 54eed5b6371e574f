"""The source DICOM series of a result: its datasets, sorted, checked against the volume the engine read.

A DICOM SEG refers to each source instance by its SOP Instance UID, so every frame must be the label map's
slice at that instance's position. :func:`read_source` reads the headers of the files that
:func:`medseg.dicom_series.series_files` picks (the series ``medseg.io.read_image`` reads), sorts them with
``highdicom.spatial.sort_datasets`` and refuses a series without the UIDs a SEG needs; :meth:`SourceSeries.slices`
then maps each dataset onto a slice index of a :class:`~medseg.geometry.Geometry` by its ImagePositionPatient,
never by file order or array order, and refuses a series that is not that grid (a missing slice, other
orientation or spacing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dicom_series import series_files
from ..geometry import Geometry

__all__ = ["POSITION_TOLERANCE", "SourceSeries", "read_source", "require_dicom_folder"]

POSITION_TOLERANCE = 0.01  # a slice may be this fraction of a voxel off the grid (positions are stored as text) ...
POSITION_FLOOR_MM = 1e-3  # ... or this many mm, whichever is larger
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
_NOT_DICOM = ("a DICOM SEG references its source DICOM series: give the DICOM folder as input, or use medseg export "
              "SEG.seg.nrrd --source DICOM_DIR")


def require_dicom_folder(path: str | Path, what: str = "--dicom-seg") -> Path:
    """`path` as a folder, or a ValueError saying that a DICOM SEG/SR needs the source series folder."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{what}: the input {path} is not a DICOM series folder; {_NOT_DICOM}")
    return path


@dataclass(frozen=True)
class SourceSeries:
    """The source instances of one series, in highdicom's order, without pixel data.

    Attributes:
        folder: where the files are.
        datasets: one pydicom dataset per instance (headers only), sorted by ``highdicom.spatial.sort_datasets``.
        modality: the series' Modality (``CT``, ``MR``, ...).
    """

    folder: Path
    datasets: tuple
    modality: str

    def slices(self, geometry: Geometry, shape: tuple[int, ...]) -> list[int]:
        """The slice index ``k`` of `geometry` (``labels[k]`` is its frame) of each dataset, in dataset order.

        Each dataset's ImagePositionPatient must be the centre of voxel ``(0, 0, k)`` and its
        ImageOrientationPatient the geometry's i and j axes, within :data:`POSITION_TOLERANCE`; every slice of
        ``shape`` (Z, Y, X) must have exactly one instance (duplicates of one position: the first is used).

        Raises:
            ValueError: an instance off the grid, another orientation or size, or a slice without an instance.
        """
        direction = np.asarray(geometry.direction)
        spacing = np.asarray(geometry.spacing)
        tolerance = np.maximum(POSITION_FLOOR_MM, POSITION_TOLERANCE * spacing)
        out, seen = [], {}
        for ds in self.datasets:
            name = Path(str(ds.filename)).name if getattr(ds, "filename", None) else ds.SOPInstanceUID
            orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
            if not (np.allclose(orientation[:3], direction[:, 0], atol=1e-4)
                    and np.allclose(orientation[3:], direction[:, 1], atol=1e-4)):
                raise ValueError(self._mismatch(f"{name} has ImageOrientationPatient {_fmt(orientation)}, the volume "
                                                f"{_fmt(np.concatenate([direction[:, 0], direction[:, 1]]))}"))
            if (int(ds.Rows), int(ds.Columns)) != tuple(shape[1:]):
                raise ValueError(self._mismatch(f"{name} is {ds.Columns} x {ds.Rows} pixels, the volume "
                                                f"{shape[2]} x {shape[1]}"))
            offset = direction.T @ (np.asarray([float(v) for v in ds.ImagePositionPatient]) - geometry.origin)
            ijk = offset / spacing
            k = int(np.rint(ijk[2]))
            off = np.abs(offset - np.array([0.0, 0.0, k]) * spacing)
            if not (0 <= k < shape[0]) or np.any(off > tolerance):
                raise ValueError(self._mismatch(f"{name} at ImagePositionPatient {_fmt(ds.ImagePositionPatient)} is "
                                                f"not on a slice of the volume ({_fmt(off)} mm off slice {k})"))
            seen.setdefault(k, name)
            out.append(k)
        missing = [k for k in range(shape[0]) if k not in seen]
        if missing:
            positions = ", ".join(f"{geometry.index_to_lps([0, 0, k])[0][2]:.6g}" for k in missing[:5])
            raise ValueError(self._mismatch(f"{len(missing)} slice(s) of the volume have no instance (z = {positions} "
                                            f"mm LPS): a slice is missing"))
        return out

    def _mismatch(self, detail: str) -> str:
        return (f"the DICOM series in {self.folder} is not the grid of the segmentation: {detail}; give the folder of "
                f"the series that was segmented, complete")


def read_source(folder: str | Path) -> SourceSeries:
    """Read and sort the headers of the series in `folder` (the one ``medseg.io.read_image`` reads).

    Raises:
        ValueError: not a folder, no series, an unreadable file, or UIDs a SEG needs are missing (named, with
            the fix).
    """
    import pydicom
    from highdicom.spatial import sort_datasets

    folder = require_dicom_folder(folder)
    _, files = series_files(folder)
    try:
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ValueError, ...
        raise ValueError(f"cannot read the DICOM series in {folder}: {exc}; export the series again") from None
    _check_uids(folder, datasets)
    datasets = _unique(datasets)
    try:
        datasets = sort_datasets(datasets)
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"cannot order the DICOM series in {folder} by slice position ({exc}); export the series "
                         f"again from the scanner or PACS") from None
    modality = str(getattr(datasets[0], "Modality", "") or "OT")
    return SourceSeries(folder, tuple(datasets), modality)


def _unique(datasets: list) -> list:
    """One dataset per SOP Instance UID (a PACS may send an instance twice)."""
    out: dict[str, object] = {}
    for ds in datasets:
        out.setdefault(str(ds.SOPInstanceUID), ds)
    return list(out.values())


def _check_uids(folder: Path, datasets: list) -> None:
    missing: dict[str, int] = {}
    for ds in datasets:
        for key in _REQUIRED_UIDS:
            if not str(getattr(ds, key, "") or "").strip().strip("\0"):
                missing[key] = missing.get(key, 0) + 1
    if missing:
        what = ", ".join(f"{key} ({n} of {len(datasets)} files)" for key, n in missing.items())
        raise ValueError(f"the DICOM series in {folder} has empty or missing UIDs: {what} (anonymised?), so a DICOM "
                         f"SEG or SR cannot refer to it; export the series again from the PACS or the scanner with "
                         f"its UIDs (or restore them, e.g. SOPInstanceUID from each file's MediaStorageSOPInstanceUID)")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"
