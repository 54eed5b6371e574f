#!/usr/bin/env python3
"""The UNet++ speed/accuracy trade-off (Zhou et al. 2018, pruning): Dice and inference time of the pruned
sub-networks L1-L4 and of accurate mode (heads averaged), on a training run's validation cases.

    .venv/bin/python scripts/benchmark_unetpp_pruning.py --model hippocampus-unetpp \\
        --data ../shared/data/hippocampus --split Resources/Models/hippocampus-unetpp.split.json \\
        --json scripts/results/unetpp_pruning_cpu.json

Each mode segments every validation case through the engine (`Segmenter`, the options a user gets), as
often as --repeats asks, the modes interleaved so load drift hits them alike; a case's time is its best
repeat. Also times the network alone on one patch (batch 1) and counts its FLOPs. Prints a Markdown table
(for the model card and the README) and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_channels, read_image
from medseg.metrics import score_label
from medseg.postprocess import PostprocessOptions

MODES = {"L1": (1, False), "L2": (2, False), "L3": (3, False), "L4": (4, False), "L4 accurate": (4, True)}


def _network_alone(segmenter: Segmenter, level: int, accurate: bool, repeats: int) -> tuple[float, float]:
    """(median seconds, GFLOP) of one forward pass on a patch-sized batch of one."""
    model = segmenter.model
    model.set_inference(prune_level=level, accurate=accurate)
    x = torch.randn(1, len(segmenter.card.inputs), *segmenter.card.patch_size, device=segmenter.device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return float(np.median(times)), counter.get_total_flops() / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hippocampus-unetpp", help="bundled name or .safetensors of a UNet++")
    p.add_argument("--data", required=True, type=Path, help="Decathlon folder with imagesTr/ and labelsTr/")
    p.add_argument("--split", required=True, type=Path, help="split.json of the training run (its validation list)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--repeats", type=int, default=3, help="passes over the cases per mode (best time kept)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.model, device=args.device)
    if segmenter.card.architecture != "unetpp":
        raise SystemExit(f"{args.model}: a {segmenter.card.architecture}, not a UNet++; give a UNet++ checkpoint")
    names = [label.name for label in segmenter.card.foreground_labels]
    cases = json.loads(args.split.read_text())["validation"]
    data = []
    for case in cases:
        image, geometry = read_channels([args.data / "imagesTr" / f"{case}.nii.gz"])
        reference, _ = read_image(args.data / "labelsTr" / f"{case}.nii.gz")
        data.append((case, image, geometry, reference))

    seconds = {mode: np.full((args.repeats, len(cases)), np.inf) for mode in MODES}
    dice = {mode: {} for mode in MODES}
    for r in range(args.repeats):
        for mode, (level, accurate) in MODES.items():
            options = SegmentOptions(precision=args.precision, measure=False, prune_level=level, accurate=accurate,
                                     postprocess=PostprocessOptions())  # the network's own output
            for i, (case, image, geometry, reference) in enumerate(data):
                result = segmenter.segment(image, geometry, options)
                seconds[mode][r, i] = result.info["seconds"]["inference"]
                if r == 0:
                    dice[mode][case] = {label.name: score_label(result.labels == label.id, reference == label.id,
                                                                geometry).dice
                                        for label in segmenter.card.foreground_labels}
    rows = {}
    for mode, (level, accurate) in MODES.items():
        net_s, gflop = _network_alone(segmenter, level, accurate, 10)
        per_label = {n: float(np.mean([dice[mode][c][n] for c in cases])) for n in names}
        rows[mode] = {"prune_level": level, "accurate": accurate, "dice": per_label,
                      "mean_dice": float(np.mean(list(per_label.values()))),
                      "seconds_per_case": float(seconds[mode].min(axis=0).mean()),
                      "network_s_per_patch": net_s, "gflop_per_patch": gflop}
    full = rows["L4"]["seconds_per_case"]
    header = (f"| mode | {' | '.join(f'Dice {n}' for n in names)} | mean Dice | time per case | vs L4 | "
              f"GFLOP per {'x'.join(map(str, segmenter.card.patch_size))} patch |")
    lines = [header, "|" + "---|" * (len(names) + 5)]
    for mode, row in rows.items():
        scores = " | ".join(f"{row['dice'][n]:.3f}" for n in names)
        lines.append(f"| {mode} | {scores} | {row['mean_dice']:.3f} | {1000 * row['seconds_per_case']:.0f} ms | "
                     f"{row['seconds_per_case'] / full:.2f}x | {row['gflop_per_patch']:.2f} |")
    print("\n".join(lines))
    if args.json:
        out = {"model": str(segmenter.path), "cases": len(cases), "split": str(args.split),
               "device": str(segmenter.device), "precision": args.precision, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "repeats": args.repeats, "modes": rows,
               "per_case_dice": dice, "table": lines}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
