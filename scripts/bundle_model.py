#!/usr/bin/env python3
"""Copy a trained checkpoint into Resources/Models as a bundled model, completing its card.

    .venv/bin/python scripts/bundle_model.py runs/hippocampus-unet3d/best.safetensors \\
        --description "..." [--metrics-json evaluation.json]

Adds the SNOMED CT terminology of each label from Resources/Models/terminology.json and, if given, the
evaluation summary (medseg evaluate --json) to the card's metrics; the weights are unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg.card import ModelCard
from medseg.checkpoint import load_checkpoint, save_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--description", default="")
    p.add_argument("--metrics-json", type=Path, help="medseg evaluate --json output to record in the card")
    args = p.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    codes = json.loads((MODELS / "terminology.json").read_text())
    card = loaded.card.to_dict()
    for label in card["labels"]:
        label["terminology"] = codes.get(label["name"], label.get("terminology"))
    if args.description:
        card["description"] = args.description
    if args.metrics_json:
        evaluation = json.loads(args.metrics_json.read_text())
        card["metrics"]["evaluation"] = {k: evaluation[k] for k in ("cases", "labels", "mean_dice")}
    new = ModelCard.from_dict(card, source=str(args.checkpoint))
    out = save_checkpoint(MODELS / f"{new.name}.safetensors", loaded.model, new)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
