"""Clean-up of a label map: keep the largest component, drop small islands, fill enclosed holes.

Each foreground label is processed on its own mask, inside its bounding box:

1. **Components** (``largest_component``, ``min_island_ml``) use full 26-connectivity (voxels touching by a
   face, an edge or a corner belong together), so a thin oblique structure is not broken into pieces.
   ``largest_component`` keeps the component with the most voxels (on a tie, the first in array order);
   ``min_island_ml`` then drops every component of fewer than ``min_island_ml`` mL, the largest one
   included. Removed voxels become background (0). This step looks at one label's voxels only, so its
   result does not depend on the order in which labels are processed.
2. **Holes** (``fill_holes``) are the 3D cavities of a label: parts of its complement that cannot reach the
   outside through face-connected (6-connected) steps, the dual of the 26-connected foreground, so a
   cavity that leaks only through an edge or a corner of the wall is enclosed. Holes are found on the map
   *after* step 1. A hole voxel is given to the label only if it is background: another label's voxels are
   never taken. When labels are nested (a shell inside a shell), a background voxel enclosed by several
   labels goes to the innermost one, the label whose enclosing cavity is smallest (ties: the lower id).

The result record (``PostprocessOptions.to_dict()`` plus ``removed_voxels`` and ``filled_voxels`` per
processed label id) is what an inference result stores; per label, new count = old - removed + filled (a
voxel removed as an island and then filled as part of a hole counts in both).

A model card may carry a default (``ModelCard.postprocess``, :func:`card_default`): what a run gets when its
caller does not choose (``SegmentOptions.postprocess`` None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from .geometry import Geometry
from .measure import label_bounding_boxes

if TYPE_CHECKING:
    from .card import ModelCard

__all__ = ["PostprocessOptions", "card_default", "postprocess"]

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class PostprocessOptions:
    """What :func:`postprocess` does; all off by default.

    Attributes:
        largest_component: keep only the largest 26-connected component of each label.
        fill_holes: fill the background inside 3D cavities enclosed by a label.
        min_island_ml: drop 26-connected components smaller than this volume (mL); 0 keeps all.
    """

    largest_component: bool = False
    fill_holes: bool = False
    min_island_ml: float = 0.0

    def __post_init__(self) -> None:
        for name in ("largest_component", "fill_holes"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"PostprocessOptions.{name} must be True or False, got {getattr(self, name)!r}")
        value = self.min_island_ml
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value) \
                or value < 0:
            raise ValueError(f"PostprocessOptions.min_island_ml must be a volume >= 0 in mL (0 keeps every island), "
                             f"got {value!r}")
        object.__setattr__(self, "largest_component", bool(self.largest_component))
        object.__setattr__(self, "fill_holes", bool(self.fill_holes))
        object.__setattr__(self, "min_island_ml", float(value))

    @property
    def active(self) -> bool:
        return self.largest_component or self.fill_holes or self.min_island_ml > 0

    def describe(self) -> str:
        """One line for people, e.g. ``largest component, islands < 0.5 mL removed, holes filled``."""
        steps = []
        if self.largest_component:
            steps.append("largest component")
        if self.min_island_ml > 0:
            steps.append(f"islands < {self.min_island_ml:g} mL removed")
        if self.fill_holes:
            steps.append("holes filled")
        return ", ".join(steps) if steps else "none"

    def to_dict(self) -> dict:
        return {"largest_component": self.largest_component, "fill_holes": self.fill_holes,
                "min_island_ml": self.min_island_ml}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PostprocessOptions:
        """The options of a :meth:`to_dict` record (a card's checked ``postprocess``); None: all off."""
        return cls(**d) if d else cls()


def card_default(card: ModelCard) -> PostprocessOptions:
    """The post-processing `card` asks for when the caller does not choose (all off for a card without one)."""
    return PostprocessOptions.from_dict(card.postprocess)


def postprocess(
    labels: np.ndarray,
    geometry: Geometry,
    options: PostprocessOptions,
    label_ids: Sequence[int] | None = None,
) -> tuple[np.ndarray, dict]:
    """Clean up each foreground label of `labels` (see the module notes for the rules).

    Args:
        labels: integer label map ``(Z, Y, X)``; not modified.
        geometry: its geometry (the voxel volume converts ``min_island_ml`` to voxels).
        options: what to do.
        label_ids: the labels to process (default: every non-zero label present); others are left as they are.

    Returns:
        The new label map (same shape and dtype) and the record
        ``{"largest_component", "fill_holes", "min_island_ml", "removed_voxels": {id: n}, "filled_voxels": {id: n}}``.
    """
    if not isinstance(options, PostprocessOptions):
        raise ValueError(f"options must be a PostprocessOptions, got {type(options).__name__}")
    boxes = label_bounding_boxes(labels)
    ids = sorted(boxes) if label_ids is None else _checked_ids(label_ids)
    out = labels.copy(order="C")
    removed = dict.fromkeys(ids, 0)
    filled = dict.fromkeys(ids, 0)
    if options.largest_component or options.min_island_ml > 0:
        for label in ids:
            if label in boxes:
                removed[label], boxes[label] = _remove_components(out, label, boxes[label], options,
                                                                  geometry.voxel_volume_ml)
    if options.fill_holes:
        filled.update(_fill_holes(out, {label: boxes[label] for label in ids if boxes.get(label) is not None}))
    return out, {**options.to_dict(), "removed_voxels": removed, "filled_voxels": filled}


def _checked_ids(label_ids: Sequence[int]) -> list[int]:
    ids = []
    for label in label_ids:
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or label == 0:
            raise ValueError(f"label_ids must be non-zero integer label ids (0 is the background), got {label!r}")
        ids.append(int(label))
    return sorted(set(ids))


def _components(mask: np.ndarray, fully_connected: bool) -> sitk.Image:
    """Connected components of boolean `mask` (ids from 1, 0 outside it) as a SimpleITK uint32 image."""
    return sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), fully_connected)


def _remove_components(out: np.ndarray, label: int, box: Box, options: PostprocessOptions,
                       voxel_ml: float) -> tuple[int, Box | None]:
    """Set the discarded components of `label` inside `box` to 0; returns how many voxels, and the new box."""
    view = out[box]
    mask = view == label
    image = _components(mask, fully_connected=True)
    where = np.nonzero(mask)
    ids = sitk.GetArrayViewFromImage(image)[where]
    sizes = np.bincount(ids)
    keep = np.ones(len(sizes), dtype=bool)
    if options.largest_component and len(sizes) > 1:
        keep[:] = False
        keep[1 + int(np.argmax(sizes[1:]))] = True
    if options.min_island_ml > 0:
        keep &= sizes * voxel_ml >= options.min_island_ml
    drop = ~keep[ids]
    view[tuple(w[drop] for w in where)] = 0
    kept = [w[~drop] for w in where]
    if len(kept[0]) == 0:
        return int(np.count_nonzero(drop)), None
    new_box = tuple(slice(s.start + int(w.min()), s.start + int(w.max()) + 1) for s, w in zip(box, kept, strict=True))
    return int(np.count_nonzero(drop)), new_box


def _hole_claims(out: np.ndarray, label: int, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the background voxels enclosed by `label`, and the size of each one's cavity."""
    view = out[box]
    image = _components(np.pad(view != label, 1, constant_values=True), fully_connected=False)
    padded = sitk.GetArrayViewFromImage(image)
    outside = padded[0, 0, 0]  # the padding frame is the outside
    inner = padded[1:-1, 1:-1, 1:-1]
    where = np.nonzero((inner != outside) & (inner != 0))
    ids = inner[where]
    sizes = np.bincount(ids)
    free = view[where] == 0
    flat = np.ravel_multi_index(tuple(w[free] + s.start for w, s in zip(where, box, strict=True)), out.shape)
    return flat, sizes[ids[free]]


def _fill_holes(out: np.ndarray, boxes: dict[int, Box]) -> dict[int, int]:
    """Fill the holes of every label of `boxes` in place; returns the number of voxels filled per label."""
    flats, sizes, owners = [], [], []
    for label, box in boxes.items():
        flat, size = _hole_claims(out, label, box)
        flats.append(flat)
        sizes.append(size)
        owners.append(np.full(len(flat), label, dtype=np.int64))
    if sum(len(f) for f in flats) == 0:
        return dict.fromkeys(boxes, 0)
    flat, size, owner = np.concatenate(flats), np.concatenate(sizes), np.concatenate(owners)
    order = np.lexsort((owner, size, flat))  # per voxel: the smallest cavity first, then the lower label id
    flat, owner = flat[order], owner[order]
    first = np.ones(len(flat), dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    np.put(out, flat[first], owner[first].astype(out.dtype))
    return {label: int(np.count_nonzero(owner[first] == label)) for label in boxes}
