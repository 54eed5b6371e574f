"""What a NIfTI file holds on disk, read from its header and data by hand.

ITK's NIfTI reader (nifti1_io's ``nifti_read_buffer``) silently turns NaN and infinite float voxels into 0,
ignores a non-finite ``scl_slope``/``scl_inter``, and zero-fills a truncated file, so those cannot be seen in
the image it returns. :func:`check_nifti` reads the header (NIfTI-1 or NIfTI-2, either byte order) and streams
the voxel data once, gzip or not, to refuse each of these with a message that names the file and the fix.
Geometry and voxels are still read by ITK; nothing here replaces it.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NiftiHeader", "check_nifti", "read_nifti_header"]

_CHUNK = 1 << 24  # bytes streamed at a time (a multiple of every voxel size)
# NIfTI datatype codes of real floating-point voxels -> numpy type (float128, code 1536, is not read by ITK).
_FLOATS = {16: "f4", 64: "f8"}
# Offsets of (datatype, bitpix, dim, vox_offset, scl_slope, scl_inter) and their struct formats.
_LAYOUT = {
    1: {"datatype": (70, "h"), "bitpix": (72, "h"), "dim": (40, "8h"), "vox_offset": (108, "f"),
        "scl_slope": (112, "f"), "scl_inter": (116, "f")},
    2: {"datatype": (12, "h"), "bitpix": (14, "h"), "dim": (16, "8q"), "vox_offset": (168, "q"),
        "scl_slope": (176, "d"), "scl_inter": (184, "d")},
}
_SIZES = {348: 1, 540: 2}


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI header that decide how many voxel bytes follow and what they mean."""

    version: int  # 1 or 2
    byte_order: str  # "<" or ">"
    datatype: int
    bitpix: int
    shape: tuple[int, ...]  # dim[1..dim[0]], in file (x, y, z, ...) order
    vox_offset: int
    scl_slope: float
    scl_inter: float

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.bitpix // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        """The numpy type of the stored voxels when they are real floats, else None."""
        code = _FLOATS.get(self.datatype)
        return None if code is None else np.dtype(self.byte_order + code)


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The header of a ``.nii`` or ``.nii.gz`` file, or None when it is not a NIfTI header (ITK then says why)."""
    try:
        with _open(path) as f:
            raw = f.read(540)
    except (EOFError, zlib.error) as exc:  # a gzip stream cut short: ITK would read its few bytes and zero-fill
        raise ValueError(f"cannot read {path}: the compressed data is truncated or corrupt ({exc}); export or "
                         f"download it again") from None
    except OSError:
        return None
    for order in ("<", ">"):
        if len(raw) >= 4 and (version := _SIZES.get(struct.unpack_from(order + "i", raw)[0])) is not None:
            size = 348 if version == 1 else 540
            if len(raw) < size:
                return None
            field = {k: struct.unpack_from(order + fmt, raw, offset) for k, (offset, fmt) in _LAYOUT[version].items()}
            dim = field["dim"]
            if not 1 <= dim[0] <= 7:
                return None
            return NiftiHeader(version, order, field["datatype"][0], field["bitpix"][0],
                               tuple(int(n) for n in dim[1: dim[0] + 1]), int(field["vox_offset"][0]),
                               float(field["scl_slope"][0]), float(field["scl_inter"][0]))
    return None


def check_nifti(path: Path) -> None:
    """Refuse a NIfTI file that ITK would read wrongly without an error.

    Raises:
        ValueError: naming ``path``: a non-finite or ambiguous intensity scaling, NaN/infinite stored voxels
            (with their counts), or a file shorter than its header needs; each with the fix.
    """
    header = read_nifti_header(path)
    if header is None or header.voxels <= 0 or header.bitpix <= 0:
        return  # not a header we understand: ITK reads it or says why
    _check_scaling(path, header)
    have, nan, inf = _scan(path, header)
    needed = header.vox_offset + header.data_bytes
    if have < needed:
        what = "decompressed bytes" if path.name.lower().endswith(".gz") else "bytes"
        raise ValueError(f"cannot read {path}: the file is truncated ({have} of the {needed} {what} its header "
                         f"needs); export or download it again")
    if nan or inf:
        raise ValueError(f"{path} has {nan} NaN and {inf} infinite voxel(s) out of {header.voxels} stored in the "
                         f"file (ITK's NIfTI reader would silently read them as 0); replace them (e.g. "
                         f"numpy.nan_to_num, or fix the reconstruction that produced them) and save the image again")


def _check_scaling(path: Path, header: NiftiHeader) -> None:
    slope, inter = header.scl_slope, header.scl_inter
    fix = ("fix the header's scl_slope and scl_inter (1 and 0 when the stored values already are the intensities, "
           "e.g. nibabel: img.header.set_slope_inter(1, 0)) and save it again")
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise ValueError(f"{path}: its NIfTI header scales intensities with scl_slope {slope} and scl_inter {inter}, "
                         f"which are not finite, so the intensities are undefined (ITK would ignore them silently); "
                         f"{fix}")
    if slope == 0 and inter != 0:
        raise ValueError(f"{path}: its NIfTI header has scl_slope 0 with scl_inter {inter}: the NIfTI standard reads "
                         f"this as 'no scaling' but ITK adds {inter} to every voxel, so the intensities are ambiguous; "
                         f"{fix}")


def _scan(path: Path, header: NiftiHeader) -> tuple[int, int, int]:
    """``(bytes in the file, NaN voxels, infinite voxels)``; the counts only for float voxels."""
    dtype = header.float_dtype
    if dtype is None and not path.name.lower().endswith(".gz"):
        return path.stat().st_size, 0, 0
    total = nan = inf = 0
    remaining = header.data_bytes
    try:
        with _open(path) as f:
            head = f.read(header.vox_offset)
            total += len(head)
            while chunk := f.read(_CHUNK):
                total += len(chunk)
                if dtype is None or remaining <= 0:
                    continue
                usable = min(len(chunk), remaining) // dtype.itemsize * dtype.itemsize
                remaining -= len(chunk)
                values = np.frombuffer(chunk[:usable], dtype=dtype)
                nan += int(np.count_nonzero(np.isnan(values)))
                inf += int(np.count_nonzero(np.isinf(values)))
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"cannot read {path}: the compressed data is truncated or corrupt ({exc}); export or "
                         f"download it again") from None
    return total, nan, inf


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
