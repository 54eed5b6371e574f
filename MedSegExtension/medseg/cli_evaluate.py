"""``medseg evaluate``: a model against reference labels, per case and per label."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from .cli_segment import add_postprocess_arguments, postprocess_options
from .inference import Segmenter, SegmentOptions
from .io import READ_EXTENSIONS, read_channels, read_image, write_json
from .metrics import score_label

__all__ = ["add_evaluate_parser", "cmd_evaluate"]


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model against reference labels",
        description="Segment every image of --images and score it against the label map of the same name in "
                    "--labels (nnU-Net's case_0000 channel suffixes are understood): Dice, IoU, HD95 and average "
                    "surface distance in mm, volume predicted vs reference in mL.")
    p.add_argument("--model", required=True, help="bundled model name or .safetensors checkpoint")
    p.add_argument("--images", required=True, type=Path, help="folder of images")
    p.add_argument("--labels", required=True, type=Path, help="folder of reference label maps")
    p.add_argument("--cases", nargs="+", help="only these case ids (file names without extension)")
    p.add_argument("--split", type=Path, help="a training run's split.json: evaluate its validation cases")
    p.add_argument("--json", type=Path, help="write the summary and per-case scores as JSON")
    p.add_argument("--csv", type=Path, help="write one row per case and label as CSV")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--prune-level", type=int, choices=(1, 2, 3, 4), help="UNet++: pruned sub-network")
    p.add_argument("--accurate", action="store_true", help="UNet++: average the heads")
    add_postprocess_arguments(p)
    p.set_defaults(func=cmd_evaluate)


def _case_id(path: Path) -> str:
    name = path.name
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _cases(args: argparse.Namespace) -> list[tuple[str, list[Path], Path]]:
    """(case id, channel files, label file) for every case to evaluate, channels in _0000, _0001 order."""
    if not args.images.is_dir() or not args.labels.is_dir():
        raise FileNotFoundError(f"--images {args.images} and --labels {args.labels} must both be folders")
    groups: dict[str, list[Path]] = {}
    for path in sorted(args.images.iterdir()):
        cid = _case_id(path)
        if cid == path.name or path.name.startswith("."):
            continue
        base = cid[:-5] if len(cid) > 5 and cid[-5] == "_" and cid[-4:].isdigit() else cid
        groups.setdefault(base, []).append(path)
    wanted = args.cases or (json.loads(args.split.read_text())["validation"] if args.split else sorted(groups))
    missing = [c for c in wanted if c not in groups]
    if missing:
        raise FileNotFoundError(f"no image for case(s) {missing[:5]} in {args.images}")
    out = []
    for cid in wanted:
        labels = [p for p in args.labels.iterdir() if _case_id(p) == cid]
        if not labels:
            raise FileNotFoundError(f"case {cid!r}: no label map named {cid}.<ext> in {args.labels}")
        out.append((cid, groups[cid], labels[0]))
    return out


def _summary(per_case: list[dict], names: list[str]) -> dict:
    labels = {}
    for name in names:
        rows = [c["labels"][name] for c in per_case]
        labels[name] = {key: _mean([r[key] for r in rows]) for key in
                        ("dice", "iou", "hd95_mm", "asd_mm", "volume_error_ml")}
        labels[name]["abs_volume_error_ml"] = _mean([abs(r["volume_error_ml"]) for r in rows])
    mean_dice = float(np.mean([labels[n]["dice"] for n in names])) if names else None
    return {"cases": len(per_case), "labels": labels, "mean_dice": mean_dice, "per_case": per_case}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _write_csv(path: Path, per_case: list[dict]) -> None:
    rows = [{"case": c["case"], "label": name, **scores} for c in per_case for name, scores in c["labels"].items()]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cmd_evaluate(args: argparse.Namespace) -> int:
    cases = _cases(args)
    segmenter = Segmenter(args.model, device=args.device)
    options = SegmentOptions(overlap=args.overlap, tta=args.tta, precision=args.precision, measure=False,
                             prune_level=args.prune_level, accurate=args.accurate,
                             postprocess=postprocess_options(args))
    foreground = segmenter.card.foreground_labels
    per_case = []
    for n, (cid, images, label_path) in enumerate(cases, 1):
        channels, geometry = read_channels(images)
        reference, _ = read_image(label_path)
        if reference.shape != channels.shape[1:]:
            raise ValueError(f"case {cid!r}: label map {label_path} has shape {reference.shape}, the image "
                             f"{channels.shape[1:]}; give the label map on the image's grid")
        result = segmenter.segment(channels, geometry, options)
        scores = {label.name: score_label(result.labels == label.id, reference == label.id, geometry).to_dict()
                  for label in foreground}
        per_case.append({"case": cid, "seconds": result.info["seconds"]["inference"], "labels": scores})
        dice = " ".join(f"{s['dice']:.3f}" for s in scores.values())
        print(f"[{n}/{len(cases)}] {cid}: dice {dice}", file=sys.stderr)
    summary = _summary(per_case, [label.name for label in foreground])
    for name, s in summary["labels"].items():
        hd = "n/a" if s["hd95_mm"] is None else f"{s['hd95_mm']:.2f}"
        print(f"{name:<28} dice {s['dice']:.4f}  iou {s['iou']:.4f}  hd95 {hd} mm  "
              f"|volume error| {s['abs_volume_error_ml']:.3f} mL")
    print(f"mean dice {summary['mean_dice']:.4f} over {summary['cases']} cases")
    if args.json:
        run = {"tta": args.tta, "overlap": args.overlap, "precision": args.precision, "prune_level": args.prune_level,
               "accurate": args.accurate, "postprocess": args.postprocess, "min_island_ml": args.min_island_ml}
        write_json(args.json, {"model": str(segmenter.path), "options": run, **summary})
    if args.csv:
        _write_csv(args.csv, per_case)
    return 0
