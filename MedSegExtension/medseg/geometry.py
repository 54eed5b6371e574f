"""Where voxels are in the patient: the geometry record that crosses the engine's boundary.

Arrays are indexed ``[k, j, i]`` (z, y, x) as SimpleITK's ``GetArrayFromImage`` and Slicer's
``arrayFromVolume`` give them. Geometry is in ITK's LPS patient coordinates: ``spacing`` and ``origin`` in
(x, y, z) = (i, j, k) order, ``direction`` a 3x3 matrix whose column ``c`` is the LPS direction of index
axis ``c``. Slicer uses RAS: :meth:`Geometry.ijk_to_ras` and :meth:`Geometry.from_ijk_to_ras` convert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DIRECTION_ORTHONORMAL_TOLERANCE", "LPS_TO_RAS", "Geometry"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# Largest |D^T D - I| entry accepted: far above the float error of directions computed from Slicer's IJK-to-RAS
# matrices or stored as text in headers (1e-7 .. 1e-6), far below any real shear or scale (a 0.01 shear is 1e-2).
DIRECTION_ORTHONORMAL_TOLERANCE = 1e-4


def _check_orthonormal(direction: np.ndarray, given) -> None:
    """Refuse a direction that is not a rotation or reflection: sheared or scaled axes have no voxel grid."""
    if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
        raise ValueError(f"direction must be a 3x3 matrix of finite numbers, got {given}; fix the image header")
    error = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if error > DIRECTION_ORTHONORMAL_TOLERANCE:
        rows = "; ".join(" ".join(f"{v:.6g}" for v in row) for row in direction)
        raise ValueError(f"the direction matrix [{rows}] is not orthonormal (its axes are sheared or scaled: "
                         f"|D^T D - I| reaches {error:.3g}, tolerance {DIRECTION_ORTHONORMAL_TOLERANCE:g}); resample "
                         f"the image onto an orthonormal grid (e.g. Slicer's Resample Scalar Volume or "
                         f"SimpleITK.Resample) or fix the direction in the header (unit-length, perpendicular "
                         f"axes) and save it again")


@dataclass(frozen=True)
class Geometry:
    """Spacing (mm), origin (LPS mm, centre of voxel 0,0,0) and direction (3x3, columns = i, j, k axes)."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        spacing = np.asarray(self.spacing, dtype=float)
        direction = np.asarray(self.direction, dtype=float)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise ValueError(f"voxel spacing must be 3 positive numbers in mm, got {self.spacing}; fix the image "
                             f"header (for example with SimpleITK's SetSpacing) before segmenting")
        if np.asarray(self.origin).shape != (3,) or not np.all(np.isfinite(self.origin)):
            raise ValueError(f"origin must be 3 finite numbers in mm, got {self.origin}")
        _check_orthonormal(direction, self.direction)
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in direction))

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix from (i, j, k, 1) to LPS (x, y, z, 1)."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction) @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) continuous indices in (i, j, k) order -> (N, 3) LPS points in mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.matrix[:3, :3].T + np.asarray(self.origin)

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK-to-RAS matrix, as Slicer's ``vtkMRMLVolumeNode.SetIJKToRASMatrix`` takes it."""
        m = self.matrix
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> Geometry:
        m = np.asarray(matrix, dtype=float)
        lps = LPS_TO_RAS @ m[:3, :]
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        return cls(tuple(spacing), tuple(lps[:3, 3]), tuple(map(tuple, lps[:3, :3] / spacing)))

    @classmethod
    def from_sitk(cls, image) -> Geometry:
        """From a 3D SimpleITK image."""
        d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(map(tuple, d)))

    def to_sitk(self, array: np.ndarray):
        """A SimpleITK image of `array` (indexed [k, j, i]) with this geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(np.asarray(self.direction).ravel()))
        return image

    def crop(self, start_kji: tuple[int, int, int]) -> Geometry:
        """Geometry of a sub-array starting at index `start_kji` (array order)."""
        ijk = np.asarray(start_kji[::-1], dtype=float)
        return Geometry(self.spacing, tuple(self.index_to_lps(ijk)[0]), self.direction)
