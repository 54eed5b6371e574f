"""Decathlon-layout data sets: reading, checking, normalising, caching in memory, and the validation split.

A data set folder holds ``dataset.json``, ``imagesTr/`` and ``labelsTr/`` (Medical Segmentation Decathlon;
nnU-Net v2's ``CASE_0000.nii.gz`` channel files are accepted too). Every case is read once, normalised
per its :class:`~medseg.card.Normalization` to float32 ``(C, Z, Y, X)`` and kept with its uint8 label map
``(Z, Y, X)``; arrays are in SimpleITK's ``[k, j, i]`` order, spacings in (x, y, z) mm. Every case is brought to
one voxel orientation (:func:`dataset_orientation`, recorded in the card) by axis permutation and flips only.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..card import Normalization
from ..geometry import Geometry
from ..orientation import orientation_code, reorientation
from ..preprocess import normalize_channel, resample, shape_at_spacing

__all__ = [
    "Case",
    "DatasetInfo",
    "dataset_orientation",
    "fit_normalization",
    "load_cases",
    "make_split",
    "normalize",
    "read_dataset",
    "read_raw",
    "read_split",
    "resample_raw",
    "write_split",
]

log = logging.getLogger(__name__)
EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_CHANNEL_NAMES = ("T1w", "T2w", "FLAIR", "T1", "T2", "ADC", "DWI", "T2star", "PD", "CT", "PET", "US")


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` and the folder say about a data set.

    Attributes:
        root: the data set folder.
        name: data set name (``dataset.json`` ``name``, else the folder name).
        labels: label id -> name, ids 0..n-1, 0 the background.
        channels: (channel name, DICOM modality) per input channel, e.g. ``("T1w", "MR")``.
        license, source: as stated in ``dataset.json`` (``"unknown"`` when absent).
        cases: case name -> (image files, one per channel; label file), sorted by name.
    """

    root: Path
    name: str
    labels: dict[int, str]
    channels: tuple[tuple[str, str], ...]
    license: str
    source: str
    cases: dict[str, tuple[tuple[Path, ...], Path]] = field(repr=False)


@dataclass
class Case:
    """One cached case: normalised image ``(C, Z, Y, X)`` float32, labels ``(Z, Y, X)`` uint8.

    ``foreground[c]`` holds the flat voxel indices of label ``c`` (for foreground over-sampling);
    ``weight`` is the U-Net boundary weight map ``(Z, Y, X)`` when the loss needs it.
    """

    name: str
    image: torch.Tensor
    label: torch.Tensor
    spacing: tuple[float, float, float]
    foreground: dict[int, np.ndarray]
    weight: torch.Tensor | None = None


def _stem(path: Path) -> str:
    for ext in EXTENSIONS:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(EXTENSIONS) and not p.name.startswith("."))


def _parse_labels(raw: object, source: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{source}: 'labels' must map label ids to names, e.g. {{\"0\": \"background\", "
                         f"\"1\": \"tumour\"}}; got {raw!r}")
    try:
        if all(isinstance(v, int) for v in raw.values()):  # nnU-Net v2: {"background": 0, ...}
            labels = {int(v): str(k) for k, v in raw.items()}
        else:
            labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{source}: 'labels' keys must be integer ids (or nnU-Net v2 name -> int), "
                         f"got {raw!r}") from None
    if sorted(labels) != list(range(len(labels))):
        raise ValueError(f"{source}: label ids must be 0..{len(labels) - 1} each once, got {sorted(labels)}; "
                         f"renumber the label maps and 'labels'")
    return labels


def _channel(text: str) -> tuple[str, str]:
    """(short channel name, DICOM modality) from a ``dataset.json`` modality string."""
    upper = text.upper()
    modality = "CT" if re.search(r"\bCT\b", upper) else "PT" if "PET" in upper else \
        "US" if re.search(r"\bUS\b|ULTRASOUND", upper) else "MR" if re.search(r"MR|T1|T2|FLAIR|ADC", upper) else "OT"
    for name in _CHANNEL_NAMES:
        if re.search(rf"\b{name}\b", text, flags=re.IGNORECASE):
            return name, modality
    return (text.strip() or "image"), modality


def _parse_channels(meta: dict, source: Path) -> tuple[tuple[str, str], ...]:
    raw = meta.get("modality", meta.get("channel_names", {"0": "image"}))
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{source}: 'modality' must map channel indices to names, e.g. {{\"0\": \"MRI\"}}")
    return tuple(_channel(str(raw[k])) for k in sorted(raw, key=int))


def _pair_cases(root: Path, n_channels: int) -> dict[str, tuple[tuple[Path, ...], Path]]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist; a Decathlon data set has imagesTr/ and labelsTr/ "
                                    f"beside dataset.json")
    labels = {_stem(p): p for p in _images(labels_dir)}
    grouped: dict[str, list[Path]] = {}
    for p in _images(images_dir):
        m = _CHANNEL_FILE.match(_stem(p))
        case = m["case"] if m and _stem(p) not in labels else _stem(p)
        grouped.setdefault(case, []).append(p)
    missing = sorted(set(grouped) - set(labels))
    if missing:
        raise FileNotFoundError(f"{images_dir}: {len(missing)} image(s) without a label in {labels_dir}, e.g. "
                                f"{missing[:3]}; add the label maps (same file name) or move the images out")
    unlabelled = sorted(set(labels) - set(grouped))
    if unlabelled:
        log.warning("%d label map(s) without an image are ignored, e.g. %s", len(unlabelled), unlabelled[:3])
    bad = [c for c, files in grouped.items() if len(files) not in (1, n_channels)]
    if bad:
        raise ValueError(f"{images_dir}: cases {bad[:3]} have {len(grouped[bad[0]])} image file(s) but dataset.json "
                         f"lists {n_channels} channel(s); use one 4D file or CASE_0000.. files per channel")
    return {case: (tuple(grouped[case]), labels[case]) for case in sorted(grouped)}


def read_dataset(root: str | Path) -> DatasetInfo:
    """Read ``dataset.json`` and pair every image with its label map.

    Raises:
        FileNotFoundError: no ``dataset.json``, no ``imagesTr/``/``labelsTr/``, or an image without a label.
        ValueError: malformed ``labels``/``modality``, or no cases.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist; --data must be a Decathlon-layout folder with "
                                f"dataset.json (name, labels, modality), imagesTr/ and labelsTr/")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON ({exc}); fix the file") from None
    labels = _parse_labels(meta.get("labels"), meta_path)
    channels = _parse_channels(meta, meta_path)
    cases = _pair_cases(root, len(channels))
    if not cases:
        raise ValueError(f"{root / 'imagesTr'} holds no images ({', '.join(EXTENSIONS)}); add the training cases")
    return DatasetInfo(root, str(meta.get("name", root.name)), labels, channels,
                       str(meta.get("license", meta.get("licence", "unknown"))),
                       str(meta.get("source", meta.get("reference", "unknown"))), cases)


def _geometry(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """The 3D geometry of an image or a header (the first three axes of a 4D one)."""
    n = image.GetDimension()
    direction = np.reshape(image.GetDirection(), (n, n))[:3, :3]
    return Geometry(tuple(image.GetSpacing()[:3]), tuple(image.GetOrigin()[:3]), tuple(map(tuple, direction)))


def _read(files: tuple[Path, ...]) -> tuple[np.ndarray, Geometry]:
    """Image files -> float32 ``(C, Z, Y, X)`` and the geometry of the first file."""
    arrays, geometry = [], None
    for path in files:
        img = sitk.ReadImage(str(path))
        a = sitk.GetArrayFromImage(img).astype(np.float32)
        if img.GetNumberOfComponentsPerPixel() > 1:
            a = np.moveaxis(a, -1, 0)
        arrays.extend(a if a.ndim == 4 else a[None])
        geometry = geometry or _geometry(img)
    return np.stack(arrays), geometry


def dataset_orientation(info: DatasetInfo, names: list[str] | None = None) -> str:
    """The voxel orientation most of the cases are stored in (ties: the earliest case's), from the headers only.

    Training brings every case to it (:func:`read_raw`) and the card records it, so that inference turns any
    input into the orientation the network learnt.
    """
    codes: Counter[str] = Counter()
    for name in names if names is not None else list(info.cases):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(info.cases[name][0][0]))
        reader.ReadImageInformation()
        codes[orientation_code(_geometry(reader).direction)] += 1
    code, count = codes.most_common(1)[0]
    if len(codes) > 1:
        log.info("cases are stored in %d voxel orientations %s; all are permuted and flipped to %s (%d of %d cases)",
                 len(codes), dict(codes), code, count, sum(codes.values()))
    return code


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """Normalise one channel ``(Z, Y, X)`` as the card says; float32 out.

    This is inference's own :func:`medseg.preprocess.normalize_channel`, so training and inference agree.
    """
    return normalize_channel(image, norm)


def fit_normalization(kind: str, images: list[np.ndarray], labels: list[np.ndarray],
                      percentiles: tuple[float, float],
                      window: tuple[float, float] | None = None) -> Normalization:
    """The normalisation of one channel; ``ct`` learns its statistics (and, without a fixed ``window``, its
    clipping window from the percentiles) from the foreground voxels."""
    if kind != "ct":
        return Normalization(kind, percentiles if kind == "zscore" else None)
    fg = np.concatenate([im[lb > 0][::10] for im, lb in zip(images, labels, strict=True)])
    if fg.size == 0:
        raise ValueError("the 'ct' normalisation needs foreground voxels in the training labels; none were found")
    lo, hi = window if window is not None else (float(v) for v in np.percentile(fg, percentiles))
    clipped = np.clip(fg, lo, hi)
    return Normalization("ct", None, (lo, hi), float(clipped.mean()), max(float(clipped.std()), 1e-8))


def _read_label(path: Path, shape: tuple[int, ...], labels: dict[int, str]) -> np.ndarray:
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if label.shape != shape:
        raise ValueError(f"{path}: label shape {label.shape} differs from its image's {shape}; "
                         f"resample the label onto the image grid")
    values = np.unique(label)
    bad = sorted(set(values.tolist()) - set(labels))
    if bad:
        raise ValueError(f"{path}: label values {bad[:10]} are not in dataset.json 'labels' {sorted(labels)}; "
                         f"add them to 'labels' or fix the label map")
    return label.astype(np.uint8)


RawCase = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]


def read_raw(info: DatasetInfo, names: list[str], orientation: str | None = None) -> list[RawCase]:
    """(image float32 (C, Z, Y, X), label uint8 (Z, Y, X), spacing) of each named case, checked.

    With `orientation` (a code such as ``"RAS"``), each case is permuted and flipped into it (no interpolation);
    its spacing is then the reoriented one. The label map is taken to lie on its image's grid.
    """
    out = []
    for name in names:
        files, label_path = info.cases[name]
        image, geometry = _read(files)
        if image.shape[0] != len(info.channels):
            raise ValueError(f"{files[0]}: {image.shape[0]} channel(s) but dataset.json lists {len(info.channels)}")
        label = _read_label(label_path, image.shape[1:], info.labels)
        if orientation is not None:
            to = reorientation(geometry, image.shape[1:], orientation)
            image, label, geometry = to.apply(image), to.apply(label), to.geometry
        out.append((image, label, geometry.spacing))
    return out


def resample_raw(case: RawCase, spacing_xyz: tuple[float, float, float]) -> RawCase:
    """A case at `spacing_xyz` (mm, x y z), resampled as inference does it: the image trilinear (align_corners
    False, :func:`medseg.preprocess.resample`), the label as the arg-max of its linearly resampled one-hot
    channels (smoother than nearest-neighbour, and no label vanishes at a boundary by rounding)."""
    image, label, spacing = case
    shape = shape_at_spacing(image.shape[1:], spacing, spacing_xyz)
    if shape == tuple(image.shape[1:]):
        return image, label, tuple(float(s) for s in spacing_xyz)
    resampled = resample(torch.from_numpy(image), shape).numpy()
    onehot = torch.nn.functional.one_hot(torch.from_numpy(label).long(), int(label.max()) + 1)
    label = resample(onehot.permute(3, 0, 1, 2).float(), shape).argmax(0).numpy().astype(np.uint8)
    return resampled, label, tuple(float(s) for s in spacing_xyz)


def load_cases(info: DatasetInfo, names: list[str], norms: list[Normalization],
               weight_fn: Callable[[np.ndarray], np.ndarray] | None = None,
               raw: list[RawCase] | None = None) -> list[Case]:
    """Read, check and normalise the named cases into memory.

    Args:
        info: from :func:`read_dataset`.
        names: case names (keys of ``info.cases``).
        norms: one normalisation per channel.
        weight_fn: optional ``label (Z, Y, X) -> weight map`` cached per case (boundary loss).
        raw: already read ``read_raw(info, names)`` output, to avoid reading twice.
    """
    cases = []
    for name, (image, label, spacing) in zip(names, raw or read_raw(info, names), strict=True):
        image = np.stack([normalize(ch, n) for ch, n in zip(image, norms, strict=True)])
        flat = label.reshape(-1)
        fg = {c: np.flatnonzero(flat == c).astype(np.int64) for c in info.labels if c != 0}
        weight = torch.from_numpy(weight_fn(label).astype(np.float32)) if weight_fn else None
        cases.append(Case(name, torch.from_numpy(image), torch.from_numpy(label), spacing,
                          {c: v for c, v in fg.items() if v.size}, weight))
    return cases


def make_split(names: list[str], fraction: float, seed: int, include: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """A seeded train/validation split; ``include`` cases are always validation cases.

    Raises:
        ValueError: an ``include`` name is not a case, or nothing would be left to train on.
    """
    unknown = sorted(set(include) - set(names))
    if unknown:
        raise ValueError(f"--val-include names {unknown} are not cases of the data set (e.g. {names[:3]})")
    n_val = max(len(set(include)), round(fraction * len(names)), 1)
    rest = [n for n in sorted(names) if n not in include]
    random.Random(seed).shuffle(rest)
    val = sorted(set(include) | set(rest[: n_val - len(set(include))]))
    train = sorted(set(names) - set(val))
    if not train:
        raise ValueError(f"no training cases left after taking {len(val)} validation cases; lower --val-fraction")
    return {"train": train, "validation": val}


def write_split(path: Path, split: dict[str, list[str]], seed: int, fraction: float) -> None:
    data = {"seed": seed, "val_fraction": fraction, "train_cases": len(split["train"]),
            "validation_cases": len(split["validation"]), **split}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_split(path: Path, names: list[str]) -> dict[str, list[str]]:
    """Read a split file and check it against the data set (disjoint, every case known)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    train, val = list(data["train"]), list(data["validation"])
    unknown = sorted((set(train) | set(val)) - set(names))
    if unknown or set(train) & set(val):
        raise ValueError(f"{path} does not match the data set (unknown cases {unknown[:3]}, or train and validation "
                         f"overlap); delete it or use a new --out folder")
    return {"train": train, "validation": val}
