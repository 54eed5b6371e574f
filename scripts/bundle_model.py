#!/usr/bin/env python3
"""Copy a trained checkpoint into Resources/Models as a bundled model, completing its card.

    .venv/bin/python scripts/bundle_model.py runs/hippocampus-unet3d/best.safetensors \\
        --description "..." [--metrics-json evaluation.json] [--pruning-json unetpp_pruning.json] \\
        [--split runs/hippocampus-unet3d/split.json] [--half]

Adds the SNOMED CT terminology and recommended display color of each label from Resources/Models/terminology.json
(entries by label name, colors in its ``_colors``) and, if given, the
evaluation summary (medseg evaluate --json) and the UNet++ level table (scripts/benchmark_unetpp_pruning.py
--json: in the metrics and, as a Markdown table, at the end of the description) to the card, and copies the
run's split beside the model as NAME.split.json; the weights are unchanged (stored as float16 with --half).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medseg.card import ModelCard
from medseg.checkpoint import load_checkpoint, save_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"


def complete_labels(card: dict, codes: dict) -> list[str]:
    """Give each label of `card` (a card dict) its codes and recommended color from terminology.json's `codes`
    (entry by label name; ``_colors``: name -> RGB); returns the foreground labels that have no codes there."""
    colors = codes.get("_colors", {})
    missing = []
    for label in card["labels"]:
        name = label["name"]
        label["terminology"] = codes.get(name, label.get("terminology")) if not name.startswith("_") else None
        if name in colors:
            label["color"] = list(colors[name])
        if label["id"] != 0 and label["terminology"] is None:
            missing.append(name)
    return missing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--description", default="")
    p.add_argument("--metrics-json", type=Path, help="medseg evaluate --json output to record in the card")
    p.add_argument("--pruning-json", type=Path, help="scripts/benchmark_unetpp_pruning.py --json output (UNet++)")
    p.add_argument("--half", action="store_true", help="store the weights as float16 (loaded as float32)")
    p.add_argument("--split", type=Path, help="the run's split.json, copied to Resources/Models/NAME.split.json")
    args = p.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    card = loaded.card.to_dict()
    missing = complete_labels(card, json.loads((MODELS / "terminology.json").read_text()))
    if missing:
        print(f"warning: no codes in {MODELS / 'terminology.json'} for {', '.join(missing)}")
    if args.description:
        card["description"] = args.description
    if args.metrics_json:
        evaluation = json.loads(args.metrics_json.read_text())
        card["metrics"]["evaluation"] = {k: evaluation[k] for k in ("cases", "nsd_tolerance_mm", "undefined_policy",
                                                                    "labels", "mean_dice") if k in evaluation}
    if args.pruning_json:
        pruning = json.loads(args.pruning_json.read_text())
        card["metrics"]["pruning"] = {k: pruning[k] for k in ("cases", "device", "precision", "threads", "modes")}
        card["description"] += ("\n\nUNet++ levels on the validation split (" + f"{pruning['cases']} cases, "
                                f"{pruning['device']}, {pruning['threads']} threads):\n" + "\n".join(pruning["table"]))
    new = ModelCard.from_dict(card, source=str(args.checkpoint))
    out = save_checkpoint(MODELS / f"{new.name}.safetensors", loaded.model, new,
                          dtype=torch.float16 if args.half else None)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.split:
        split = MODELS / f"{new.name}.split.json"
        split.write_text(args.split.read_text())
        print(f"wrote {split}")


if __name__ == "__main__":
    main()
