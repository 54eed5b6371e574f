"""Voxel orientation: which way the array axes point, and exact reorientation by axis permutation and flips.

An orientation code is three letters, one per index axis ``(i, j, k)`` = array axes ``(X, Y, Z)`` of a
``[k, j, i]`` array, each naming the patient direction the axis points *to*: ``L``/``R``, ``P``/``A``,
``S``/``I`` (ITK's ``DICOMOrientImageFilter`` convention: an identity direction is ``"LPS"``, a NIfTI
written by most tools is ``"RAS"``). An oblique direction has the code of its nearest axis-aligned
orientation (ITK's rule, taken from ITK itself).

:func:`reorientation` gives the permutation and flips that bring a ``(..., Z, Y, X)`` array to a target code,
the geometry of the result (same voxels, same physical place) and the exact inverse, as
``sitk.DICOMOrient`` does it: no interpolation, every voxel kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import Geometry

__all__ = ["Reorientation", "check_orientation_code", "orientation_code", "orientation_problem", "reorientation"]

# Per LPS patient axis: the letter an index axis pointing along +axis gets, then along -axis.
_PAIRS = ("LR", "PA", "SI")


def check_orientation_code(code: object, where: str = "orientation") -> str:
    """Return `code` if it is a valid orientation code (``"RAS"``, ``"LPS"``, ``"PIR"`` ...), else ValueError.

    Args:
        code: three upper-case letters, one from each of L/R, P/A, S/I.
        where: the name of the input, for the message (a card field, an option).
    """
    problem = orientation_problem(code)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return code


def orientation_problem(code: object) -> str | None:
    """What is wrong with an orientation code, or None when it is valid (card validation collects these)."""
    if isinstance(code, str) and len(code) == 3 and code.isupper() and sorted(map(_pair_of, code)) == [0, 1, 2]:
        return None
    return (f"expected three upper-case letters, one from each of R/L, A/P and S/I, naming where the i, j, k axes "
            f"point (for example 'RAS' or 'LPS'), got {code!r}")


def _pair_of(letter: str) -> int:
    """The LPS axis (0, 1, 2) a letter lies on, or -1."""
    return next((n for n, pair in enumerate(_PAIRS) if letter in pair), -1)


def orientation_code(direction: Sequence[Sequence[float]] | np.ndarray) -> str:
    """The orientation code of a 3x3 direction matrix (columns = LPS directions of the i, j, k axes).

    An oblique matrix gets the code of the nearest axis-aligned orientation, exactly as ITK's
    ``DICOMOrientImageFilter.GetOrientationFromDirectionCosines`` computes it (it is called here).
    """
    import SimpleITK as sitk

    d = np.asarray(direction, dtype=float)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(d.ravel()))
    return check_orientation_code(code, f"the orientation of direction {d.tolist()}")


@dataclass(frozen=True)
class Reorientation:
    """How one grid maps to another orientation by axis permutation and flips only.

    Attributes:
        axes: for each array axis of the result (Z, Y, X), the source array axis it takes.
        flips: for each array axis of the result, whether it runs backwards through its source axis.
        source: the geometry of the source grid; ``geometry`` that of the reoriented one (the same voxels).
        source_code, target_code: orientation codes of the two grids (``target_code`` is the code asked for;
            an oblique source keeps its obliqueness, so the result's own code equals it).
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    source: Geometry
    geometry: Geometry
    source_code: str
    target_code: str

    @property
    def identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The reoriented shape of a source `(..., Z, Y, X)` shape."""
        lead = tuple(shape[:-3])
        return lead + tuple(int(shape[len(lead) + a]) for a in self.axes)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Source `(..., Z, Y, X)` -> reoriented (a C-contiguous array; `array` itself when nothing changes)."""
        if self.identity:
            return array
        lead = array.ndim - 3
        out = np.transpose(array, (*range(lead), *(lead + a for a in self.axes)))
        flipped = tuple(lead + a for a in range(3) if self.flips[a])
        return np.ascontiguousarray(np.flip(out, flipped) if flipped else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Reoriented `(..., Z, Y, X)` -> the source grid: the exact inverse of :meth:`apply`."""
        if self.identity:
            return array
        lead = array.ndim - 3
        flipped = tuple(lead + a for a in range(3) if self.flips[a])
        out = np.flip(array, flipped) if flipped else array
        back = np.argsort(self.axes)
        return np.ascontiguousarray(np.transpose(out, (*range(lead), *(lead + int(a) for a in back))))


def reorientation(geometry: Geometry, shape: Sequence[int], target: str) -> Reorientation:
    """The permutation and flips that bring an array of `shape` `(Z, Y, X)` on `geometry` to `target`.

    Args:
        geometry: the source grid's geometry.
        shape: the source array's spatial shape `(Z, Y, X)` (the flips need the axis lengths).
        target: the orientation code wanted (``card.orientation``).

    Returns:
        A :class:`Reorientation` whose ``geometry`` places every voxel where it was: direction columns permuted
        and negated, spacing permuted, origin at the voxel that becomes index (0, 0, 0).
    """
    target = check_orientation_code(target, "target orientation")
    if len(shape) != 3:
        raise ValueError(f"reorientation needs a 3D (Z, Y, X) shape, got {tuple(shape)}")
    source = orientation_code(geometry.direction)
    size_ijk = [int(s) for s in shape[::-1]]
    d = np.asarray(geometry.direction, dtype=float)
    columns, spacing, start, from_ijk, flip_ijk = [], [], [0, 0, 0], [], []
    for letter in target:
        c = next(n for n, own in enumerate(source) if _pair_of(own) == _pair_of(letter))
        flip = source[c] != letter
        from_ijk.append(c)
        flip_ijk.append(flip)
        columns.append(-d[:, c] if flip else d[:, c])
        spacing.append(geometry.spacing[c])
        start[c] = size_ijk[c] - 1 if flip else 0
    origin = geometry.index_to_lps(np.asarray(start, dtype=float))[0]
    direction = np.stack(columns, axis=1)
    new = Geometry(tuple(spacing), tuple(origin), tuple(map(tuple, direction)))
    axes = tuple(2 - from_ijk[2 - a] for a in range(3))
    flips = tuple(flip_ijk[2 - a] for a in range(3))
    return Reorientation(axes, flips, geometry, new, source, target)
