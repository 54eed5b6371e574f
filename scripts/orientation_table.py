#!/usr/bin/env python3
"""Validation Dice for all 48 voxel orders of the same images: does the stored voxel order change the result?

    .venv/bin/python scripts/orientation_table.py [--model hippocampus-unet3d] [--orientation RAS] \\
        [--data ../shared/data/hippocampus] [--split Resources/Models/hippocampus-unet3d.split.json] \\
        [--cases 10] [--as-stored] [--out scripts/results/orientation_table]

Each validation case (image and expert labels) is rewritten in every orientation code (6 axis orders x 8 flip
combinations, by ITK's ``DICOMOrient``: no interpolation, the same physical image), segmented, and scored against
its labels on that grid. The model runs from a temporary copy whose card records ``--orientation`` (default: the
card's own); ``--as-stored`` removes it instead, so the engine feeds every array as stored (the behaviour before
cards recorded an orientation). Writes OUT.json and OUT.md: per order the mean Dice per label, the largest change
of a per-case mean Dice against the stored order, and the most voxels whose label differs from the stored order's
result (mapped back to the stored grid).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import read_card
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.orientation import orientation_code
from medseg.postprocess import PostprocessOptions

ROOT = Path(__file__).resolve().parents[1]
CODES = ["".join(("LR", "PA", "SI")[axis][sign] for axis, sign in zip(order, signs, strict=True))
         for order in itertools.permutations(range(3)) for signs in itertools.product((0, 1), repeat=3)]


def _update_card():
    spec = importlib.util.spec_from_file_location("update_card", ROOT / "scripts" / "update_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.update_card


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return float("nan") if total == 0 else 2 * int((a & b).sum()) / total


def _model_copy(model: str, orientation: str | None, as_stored: bool, folder: Path) -> Path:
    source = resolve_checkpoint(model)
    path = folder / source.name
    path.write_bytes(source.read_bytes())
    wanted = None if as_stored else (orientation or read_card(source).orientation)
    if wanted is None and not as_stored:
        raise SystemExit(f"{source}: its card records no orientation; give --orientation CODE (or --as-stored)")
    _update_card()(path, {"orientation": wanted})
    return path


def _case(segmenter: Segmenter, image: sitk.Image, label: sitk.Image, ids: list[int]) -> dict[str, dict]:
    """Every orientation code of one case: Dice per label, and the predicted labels back on the stored grid."""
    stored = orientation_code(np.reshape(image.GetDirection(), (3, 3)))
    out = {}
    for code in CODES:
        img, lab = sitk.DICOMOrient(image, code), sitk.DICOMOrient(label, code)
        result = segmenter.segment(sitk.GetArrayFromImage(img).astype(np.float32), Geometry.from_sitk(img),
                                   SegmentOptions(measure=False, postprocess=PostprocessOptions()))
        truth = sitk.GetArrayFromImage(lab)
        back = sitk.DICOMOrient(Geometry.from_sitk(img).to_sitk(result.labels), stored)
        out[code] = {"dice": {i: dice(result.labels == i, truth == i) for i in ids},
                     "labels": sitk.GetArrayFromImage(back)}
    return out | {"stored": out[stored] | {"code": stored}}


def _table(per_case: list[dict], names: dict[int, str]) -> list[dict]:
    rows = []
    for code in CODES:
        changes = [abs(np.mean(list(c[code]["dice"].values())) - np.mean(list(c["stored"]["dice"].values())))
                   for c in per_case]
        rows.append({
            "code": code,
            "stored": all(c["stored"]["code"] == code for c in per_case),
            "dice": {names[i]: float(np.nanmean([c[code]["dice"][i] for c in per_case])) for i in names},
            "max_case_mean_dice_change": float(max(changes)),
            "max_voxels_changed": int(max((c[code]["labels"] != c["stored"]["labels"]).sum() for c in per_case)),
        })
    for row in rows:
        row["mean_dice"] = float(np.mean(list(row["dice"].values())))
    return rows


def _markdown(report: dict) -> str:
    names = list(report["labels"])
    head = ["order", *(f"Dice {n}" for n in names), "mean Dice", "largest case change vs stored", "voxels changed"]
    lines = [f"# Validation Dice for the 48 voxel orders: {report['model']}, {report['mode']}", "",
             f"{len(report['cases'])} validation cases ({', '.join(report['cases'])}), each rewritten by ITK's "
             f"DICOMOrient in every orientation code; {report['description']}", "",
             f"Mean Dice over the 48 orders: min {report['summary']['min_mean_dice']:.4f}, max "
             f"{report['summary']['max_mean_dice']:.4f}; largest change of a case's mean Dice against the stored "
             f"order: {report['summary']['max_case_mean_dice_change']:.4f}; most voxels changed in a case: "
             f"{report['summary']['max_voxels_changed']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["orders"]:
        code = f"**{row['code']}** (stored)" if row["stored"] else row["code"]
        cells = [code, *(f"{row['dice'][n]:.4f}" for n in names), f"{row['mean_dice']:.4f}",
                 f"{row['max_case_mean_dice_change']:.4f}", str(row["max_voxels_changed"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hippocampus-unet3d", help="bundled name or checkpoint path")
    p.add_argument("--orientation", help="the training orientation to record in the copy's card (default: its own)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hippocampus")
    p.add_argument("--split", type=Path, default=ROOT / "Resources" / "Models" / "hippocampus-unet3d.split.json")
    p.add_argument("--cases", type=int, default=10, help="the first N validation cases of the split")
    p.add_argument("--as-stored", action="store_true", help="no orientation in the card: arrays fed as stored")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="output stem (default scripts/results/orientation_table[_as_stored])")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = json.loads(args.split.read_text())["validation"][: args.cases]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        segmenter = Segmenter(_model_copy(args.model, args.orientation, args.as_stored, Path(folder)), device="cpu")
    names = {label.id: label.name for label in segmenter.card.foreground_labels}
    per_case = []
    for name in cases:
        image = sitk.ReadImage(str(args.data / "imagesTr" / f"{name}.nii.gz"))
        label = sitk.ReadImage(str(args.data / "labelsTr" / f"{name}.nii.gz"))
        per_case.append(_case(segmenter, image, label, list(names)))
        print(f"{name}: stored {per_case[-1]['stored']['code']}", file=sys.stderr)
    rows = _table(per_case, names)
    mode = "as stored (no orientation in the card)" if args.as_stored else \
        f"reoriented to the card's {segmenter.card.orientation}"
    description = ("the card records no orientation, so every array is fed as stored." if args.as_stored else
                   f"the card records {segmenter.card.orientation}, so every input is permuted and flipped into it.")
    report = {
        "model": segmenter.card.name, "checkpoint": str(resolve_checkpoint(args.model)), "mode": mode,
        "description": description, "card_orientation": segmenter.card.orientation, "cases": cases,
        "labels": list(names.values()), "device": "cpu", "threads": args.threads,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": {"min_mean_dice": min(r["mean_dice"] for r in rows),
                    "max_mean_dice": max(r["mean_dice"] for r in rows),
                    "max_case_mean_dice_change": max(r["max_case_mean_dice_change"] for r in rows),
                    "max_voxels_changed": max(r["max_voxels_changed"] for r in rows)},
        "orders": rows,
    }
    out = args.out or ROOT / "scripts" / "results" / ("orientation_table_as_stored" if args.as_stored else
                                                      "orientation_table")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(_markdown(report), encoding="utf-8")
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
