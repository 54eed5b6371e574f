#!/usr/bin/env python3
"""Measure a bundled model's ``input_domain`` (medseg.domain) on its training cases, and check its thresholds.

    .venv/bin/python scripts/describe_training_inputs.py hippocampus-unet3d ../shared/data/hippocampus \\
        --json input_domain.json

Reads the model's split (Resources/Models/NAME.split.json), measures the training cases' patient-axis sizes,
spacings and 1st/99th intensity percentiles as ``medseg train`` records them for new cards, then runs
``domain_warnings`` on every validation case with that domain and prints how many warn (the thresholds are
chosen so that none should). The card itself is not changed: add the JSON to it (scripts/update_card.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from medseg.checkpoint import read_card
from medseg.domain import describe_inputs, domain_warnings
from medseg.io import read_channels
from medseg.train.data import read_dataset

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled model name (Resources/Models/NAME.safetensors and NAME.split.json)")
    p.add_argument("data", type=Path, help="the Decathlon-style data set folder it was trained on")
    p.add_argument("--json", type=Path, help="write {'input_domain': ..., 'validation': ...} here")
    args = p.parse_args()
    card = read_card(MODELS / f"{args.model}.safetensors")
    split = json.loads((MODELS / f"{args.model}.split.json").read_text())
    info = read_dataset(args.data)
    domain = describe_inputs([info.cases[n][0] for n in split["train"]], [c.name for c in card.inputs])
    card = dataclasses.replace(card, input_domain=domain)
    warned = {}
    for name in split["validation"]:
        channels, geometry = read_channels(info.cases[name][0])
        messages = domain_warnings(card, channels, geometry)
        if messages:
            warned[name] = messages
    print(json.dumps(domain, indent=1))
    print(f"validation cases with a warning: {len(warned)} of {len(split['validation'])}")
    for name, messages in warned.items():
        print(f"  {name}: {messages}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "input_domain": domain, "validation_cases":
                                         len(split["validation"]), "validation_warned": warned}, indent=1) + "\n")


if __name__ == "__main__":
    main()
