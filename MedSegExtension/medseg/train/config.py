"""Training options as frozen dataclasses: what to train, how, and where to write the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULES", "AugmentConfig", "TrainConfig"]

LOSSES = ("dice", "ce_dice", "boundary_ce")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("poly", "step", "constant")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation (nnU-Net's default ranges; elastic deformation as in the U-Net paper).

    Each ``p_*`` is the per-sample probability of one transform. Spatial transforms (rotation, scaling,
    elastic deformation, flips) are fused into one sampling grid per sample, so a patch is interpolated once.

    Attributes:
        enabled: False turns every transform off (patches are then exact crops).
        p_rotate: probability of a random rotation about each axis of up to ``rotate_deg`` degrees.
        p_scale: probability of an isotropic zoom by a factor in ``scale`` (> 1 zooms out).
        p_elastic: probability of an elastic deformation: random displacements with std ``elastic_px``
            voxels on a coarse ``elastic_grid``-node grid, interpolated smoothly (U-Net: 3x3 grid, 10 px).
        flip_axes: array axes mirrored each with probability 0.5.
        p_gamma: probability of a gamma curve with gamma in ``gamma`` (on the intensities rescaled to [0, 1]).
        p_brightness: probability of multiplying by a factor in ``brightness``.
        p_contrast: probability of scaling the contrast about the mean by a factor in ``contrast``.
        p_noise: probability of additive Gaussian noise with std up to ``noise_std``.
        p_blur: probability of a Gaussian blur with sigma (voxels) in ``blur_sigma``.
        p_bias: probability of a smooth multiplicative bias field of log-amplitude ``bias_std`` (MRI only).
    """

    enabled: bool = True
    p_rotate: float = 0.2
    rotate_deg: float = 30.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.2
    elastic_px: float = 4.0
    elastic_grid: int = 3
    flip_axes: tuple[int, ...] = (0, 1, 2)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_noise: float = 0.1
    noise_std: float = 0.1
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_bias: float = 0.3
    bias_std: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; stored (as JSON) in the run folder as ``config.json``.

    Attributes:
        data: data set folder in the Decathlon layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        out: run folder (checkpoints, ``split.json``, ``log.csv``, ``curves.png``).
        name: model name written into the card (``hippocampus-unet3d``).
        arch: registry name (``medseg models`` lists them).
        width, depth, norm, arch_args: constructor arguments (depth only for architectures that take it).
        spacing: train at this voxel spacing (mm, x y z): every case is resampled to it once, when cached
            (image trilinear, label by its one-hot arg-max), and the card records it, so inference resamples
            to it and back; None trains at the data's own spacing (the card records their median).
        intensity: intensity normalisation ``zscore``, ``ct``, ``minmax``, ``none``; None picks by modality.
        percentiles: clipping percentiles of the ``zscore`` (per image) and ``ct`` (training set) kinds.
        ct_window: a fixed ``ct`` clipping window (low, high) in HU instead of the percentiles (e.g. the
            [-125, 275] HU a data set was stored in); mean and std are still learnt from the foreground.
        patch: patch size in array order (z, y, x); each a multiple of the network's size divisor.
        epochs, steps_per_epoch, batch: steps_per_epoch 0 means one pass (training cases // batch).
        lr, optimizer, momentum, weight_decay, schedule, step_size, step_gamma: optimisation; SGD uses
            Nesterov momentum; ``step`` multiplies the rate by ``step_gamma`` every ``step_size`` epochs.
        loss: ``dice`` (V-Net), ``ce_dice`` or ``boundary_ce`` (U-Net's weight map, ``w0``, ``sigma`` px).
        deep_supervision: supervise every head of networks with ``forward_heads`` (UNet++).
        fg_fraction: share of patches centred on a random foreground voxel.
        val_fraction, val_include, val_every: the fixed validation split and how often it is scored.
        seed, device, resume, num_threads, augment: run control.
        summary, description: text for the model card (a default is written when empty).
    """

    data: Path
    out: Path
    name: str = "model"
    arch: str = "unet"
    width: float = 0.25
    depth: int | None = 4
    norm: str | None = "instance"
    arch_args: dict = field(default_factory=dict)
    spacing: tuple[float, float, float] | None = None
    intensity: str | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] | None = None
    patch: tuple[int, ...] = (40, 56, 40)
    epochs: int = 100
    steps_per_epoch: int = 0
    batch: int = 2
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.99
    weight_decay: float = 3e-5
    schedule: str = "poly"
    step_size: int = 0
    step_gamma: float = 0.1
    loss: str = "ce_dice"
    w0: float = 10.0
    sigma: float = 5.0
    deep_supervision: bool = True
    fg_fraction: float = 1 / 3
    val_fraction: float = 0.2
    val_include: tuple[str, ...] = ()
    val_every: int = 5
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    num_threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    summary: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (len(self.patch) == 3 and all(p > 0 for p in self.patch),
             f"patch must be 3 positive sizes (z, y, x), got {self.patch!r}; training runs 3D networks"),
            (self.epochs >= 1 and self.batch >= 1 and self.val_every >= 1 and self.steps_per_epoch >= 0,
             "epochs, batch and val_every must be >= 1 and steps_per_epoch >= 0"),
            (0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction!r}"),
            (0.0 <= self.fg_fraction <= 1.0, f"fg_fraction must be in [0, 1], got {self.fg_fraction!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr!r}"),
            (self.spacing is None or (len(self.spacing) == 3 and all(s > 0 for s in self.spacing)),
             f"spacing must be 3 positive sizes in mm (x, y, z), got {self.spacing!r}"),
            (self.ct_window is None or (len(self.ct_window) == 2 and self.ct_window[0] < self.ct_window[1]),
             f"ct_window must be (low, high) HU with low < high, got {self.ct_window!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        object.__setattr__(self, "val_include", tuple(self.val_include))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.ct_window is not None:
            object.__setattr__(self, "ct_window", tuple(float(v) for v in self.ct_window))
