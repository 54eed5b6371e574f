"""Patch sampling and on-the-fly augmentation in torch, fast on a CPU.

Each training patch is read from its cached volume through one sampling grid that fuses the crop, a random
rotation and zoom (in mm, so anisotropic voxels rotate correctly), mirroring, and an elastic deformation
(U-Net paper: random displacements on a coarse grid, smoothly interpolated to every voxel). The image (and
the boundary weight map) is interpolated trilinearly, the label map with nearest neighbour, so labels stay
in their set and aligned with the image; voxels outside the volume read as 0 (the normalised mean /
background), which also pads volumes smaller than the patch. Intensity transforms (bias field, noise,
blur, brightness, contrast, gamma) then run on the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugmentConfig
from .data import Case

__all__ = ["Batch", "PatchSampler", "augment_intensity", "elastic_field", "sample_grid", "spatial_matrix", "warp"]


@dataclass
class Batch:
    """image ``(B, C, Z, Y, X)`` float32, label ``(B, Z, Y, X)`` int64, weight ``(B, Z, Y, X)`` or None."""

    image: Tensor
    label: Tensor
    weight: Tensor | None = None


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _happens(gen: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=gen)) < p


def _rotation(angles: list[float]) -> Tensor:
    """Rotation matrix ``R_0 R_1 R_2`` of rotations by ``angles[a]`` radians about array axis ``a``."""
    r = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles):
        i, j = [k for k in range(3) if k != axis]
        m = torch.eye(3, dtype=torch.float64)
        m[i, i] = m[j, j] = math.cos(angle)
        m[i, j], m[j, i] = -math.sin(angle), math.sin(angle)
        r = r @ m
    return r


def spatial_matrix(cfg: AugmentConfig, gen: torch.Generator, spacing_zyx: tuple[float, ...]) -> Tensor:
    """A random 3x3 map from output offsets to input offsets, in voxels (rotation, zoom, mirroring).

    Rotation and zoom act in mm (``S^-1 R s S`` with ``S`` the spacing), so they stay rigid on anisotropic
    grids; a zoom factor above 1 samples a larger region (zooms out).
    """
    m = torch.eye(3, dtype=torch.float64)
    if not cfg.enabled:
        return m
    if _happens(gen, cfg.p_rotate):
        theta = math.radians(cfg.rotate_deg)
        s = torch.tensor(spacing_zyx, dtype=torch.float64)
        m = torch.diag(1 / s) @ _rotation([_uniform(gen, -theta, theta) for _ in range(3)]) @ torch.diag(s)
    if _happens(gen, cfg.p_scale):
        m = m * _uniform(gen, *cfg.scale)
    flips = torch.ones(3, dtype=torch.float64)
    for axis in cfg.flip_axes:
        if _happens(gen, 0.5):
            flips[axis] = -1.0
    return m @ torch.diag(flips)


def elastic_field(cfg: AugmentConfig, patch: tuple[int, ...], gen: torch.Generator) -> Tensor | None:
    """Elastic displacements ``(3, Z, Y, X)`` in voxels, or None when not drawn.

    Random vectors with std ``cfg.elastic_px`` on a coarse ``elastic_grid``-node grid, interpolated
    smoothly (trilinear here, bicubic in the U-Net paper's 2D) to every voxel of the patch.
    """
    if not cfg.enabled or not _happens(gen, cfg.p_elastic):
        return None
    g = cfg.elastic_grid
    coarse = torch.randn((1, 3, g, g, g), generator=gen) * cfg.elastic_px
    return F.interpolate(coarse, size=patch, mode="trilinear", align_corners=True)[0].double()


def sample_grid(start: np.ndarray, patch: tuple[int, ...], shape: tuple[int, ...], matrix: Tensor,
                displacement: Tensor | None = None) -> Tensor:
    """The ``grid_sample`` grid ``(1, Z, Y, X, 3)`` reading `patch` voxels from a volume of `shape`.

    Output voxel ``o`` reads input position ``c + matrix @ (o - (patch - 1) / 2) + displacement[o]`` with
    ``c = start + (patch - 1) / 2``: with the identity matrix and no displacement it is the plain crop
    starting at `start` (which may be negative or run past the volume: those voxels read 0).
    """
    axes = [torch.arange(p, dtype=torch.float64) - (p - 1) / 2 for p in patch]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    centre = torch.as_tensor(start, dtype=torch.float64) + torch.tensor([(p - 1) / 2 for p in patch])
    pos = (matrix @ offsets + centre[:, None]).reshape(3, *patch)
    if displacement is not None:
        pos = pos + displacement
    size = torch.tensor([max(s - 1, 1) for s in shape], dtype=torch.float64).reshape(3, 1, 1, 1)
    norm = 2 * pos / size - 1
    return norm.flip(0).permute(1, 2, 3, 0)[None].float()  # grid_sample wants (x, y, z) last


def warp(case: Case, grid: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Resample a case through `grid`: image ``(C, *patch)`` trilinear, label ``(*patch)`` nearest, weight."""
    channels = [case.image] + ([case.weight[None]] if case.weight is not None else [])
    stacked = torch.cat(channels)[None]
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    label = F.grid_sample(case.label[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                          align_corners=True)[0, 0]
    n = case.image.shape[0]
    weight = out[n] if case.weight is not None else None
    if weight is not None:
        weight = torch.where(weight > 0, weight, torch.ones_like(weight))  # outside the volume: weight 1
    return out[:n], label.round().long(), weight


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(C, Z, Y, X)`` with `sigma` voxels (reflect-padded)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    out = x[:, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        mode = "reflect" if out.shape[2 + axis] > radius else "replicate"
        out = F.conv3d(F.pad(out, pad, mode=mode), k.reshape(shape))
    return out[:, 0]


def _gamma(x: Tensor, gamma: float) -> Tensor:
    """nnU-Net's gamma: on the intensities rescaled to [0, 1], keeping each channel's mean and std."""
    dims = (1, 2, 3)
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    y = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1) ** gamma * (hi - lo) + lo
    return (y - y.mean(dims, keepdim=True)) / y.std(dims, keepdim=True).clamp_min(1e-8) * std + mean


def _bias(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """A smooth multiplicative MRI bias field (exp of a coarse random field), applied above the minimum."""
    coarse = torch.randn((1, 1, 3, 3, 3), generator=gen) * cfg.bias_std
    field = torch.exp(F.interpolate(coarse, size=x.shape[1:], mode="trilinear", align_corners=True)[0])
    lo = x.amin((1, 2, 3), keepdim=True)
    return (x - lo) * field + lo


def augment_intensity(x: Tensor, cfg: AugmentConfig, gen: torch.Generator, mri: bool) -> Tensor:
    """Random intensity transforms of one sample ``(C, Z, Y, X)`` (returns a new tensor)."""
    if not cfg.enabled:
        return x
    if mri and _happens(gen, cfg.p_bias):
        x = _bias(x, cfg, gen)
    if _happens(gen, cfg.p_noise):
        x = x + torch.randn(x.shape, generator=gen) * _uniform(gen, 0.0, cfg.noise_std)
    if _happens(gen, cfg.p_blur):
        x = _blur(x, _uniform(gen, *cfg.blur_sigma))
    if _happens(gen, cfg.p_brightness):
        x = x * _uniform(gen, *cfg.brightness)
    if _happens(gen, cfg.p_contrast):
        mean = x.mean((1, 2, 3), keepdim=True)
        lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        x = torch.minimum(torch.maximum((x - mean) * _uniform(gen, *cfg.contrast) + mean, lo), hi)
    if _happens(gen, cfg.p_gamma):
        x = _gamma(x, _uniform(gen, *cfg.gamma))
    return x


class PatchSampler:
    """Draws augmented training batches from cached cases, with nnU-Net's foreground over-sampling.

    Args:
        cases: the cached training cases.
        patch: patch size (z, y, x).
        fg_fraction: probability that a patch is centred on a random voxel of a random foreground label
            (present in the case); otherwise the patch lies at a uniformly random place.
        augment: the augmentation options.
        generator: the torch generator every random choice comes from (its state makes runs resumable).
        mri: whether the bias field applies (MR inputs).
    """

    def __init__(self, cases: list[Case], patch: tuple[int, ...], fg_fraction: float, augment: AugmentConfig,
                 generator: torch.Generator, mri: bool = False):
        if not cases:
            raise ValueError("no training cases to sample patches from")
        self.cases, self.patch, self.fg_fraction = cases, tuple(patch), fg_fraction
        self.augment, self.gen, self.mri = augment, generator, mri

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.gen))

    def _start(self, case: Case) -> np.ndarray:
        shape = np.array(case.label.shape)
        p = np.array(self.patch)
        low, high = np.minimum(0, shape - p), np.maximum(0, shape - p)
        if case.foreground and _happens(self.gen, self.fg_fraction):
            classes = sorted(case.foreground)
            voxels = case.foreground[classes[self._randint(len(classes))]]
            centre = np.array(np.unravel_index(int(voxels[self._randint(len(voxels))]), tuple(shape)))
            return np.clip(centre - p // 2, low, high)
        return np.array([lo + self._randint(hi - lo + 1) for lo, hi in zip(low, high, strict=True)])

    def one(self, case: Case) -> tuple[Tensor, Tensor, Tensor | None]:
        """One augmented patch of `case`: image ``(C, *patch)``, label ``(*patch)``, weight or None."""
        spacing_zyx = tuple(reversed(case.spacing))
        matrix = spatial_matrix(self.augment, self.gen, spacing_zyx)
        grid = sample_grid(self._start(case), self.patch, tuple(case.label.shape), matrix,
                           elastic_field(self.augment, self.patch, self.gen))
        image, label, weight = warp(case, grid)
        return augment_intensity(image, self.augment, self.gen, self.mri), label, weight

    def sample(self, batch: int) -> Batch:
        """A batch of `batch` patches from cases drawn uniformly with replacement."""
        items = [self.one(self.cases[self._randint(len(self.cases))]) for _ in range(batch)]
        weight = torch.stack([w for _, _, w in items]) if items[0][2] is not None else None
        return Batch(torch.stack([i for i, _, _ in items]), torch.stack([lb for _, lb, _ in items]), weight)
