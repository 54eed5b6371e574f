"""Does learning from corrections help under a site shift? (issue 11, item 7)

The bundled ``hippocampus-unet3d``'s VALIDATION cases (Resources/Models/hippocampus-unet3d.split.json) get a
simulated scanner change: a strong smooth multiplicative bias field and a gamma change of the intensities. Ten
shifted cases with their reference labels play the "corrections"; ``medseg finetune`` fine-tunes the model on
them, replaying the original training cases; the other shifted validation cases (held out by ``--holdout``) are
scored before and after, and so is the parent's unshifted validation Dice on those same held-out cases (the
replay split's validation list), which the drop rule guards.

    .venv/bin/python scripts/finetune_experiment.py [--steps 150] [--threads 2]

Writes scripts/results/finetune_experiment.json (the numbers and the settings); the fine-tuned checkpoint goes to
a temporary folder and is deleted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegExtension"))

from medseg.train.finetune import FinetuneConfig, _split_holdout, finetune  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hippocampus"
SPLIT = ROOT / "Resources" / "Models" / "hippocampus-unet3d.split.json"
OUT = ROOT / "scripts" / "results" / "finetune_experiment.json"
N_CORRECTIONS = 10
GAMMA = 3.0
BIAS_LOG_AMPLITUDE = 1.0  # the field spans about exp(-1)..exp(1): a factor 7.4 across the volume


def shift(image: np.ndarray, seed: int) -> np.ndarray:
    """The simulated site: gamma on the intensities rescaled to [0, 1], then a smooth random bias field."""
    rng = np.random.default_rng(seed)
    hi = float(image.max()) or 1.0
    out = (np.clip(image, 0, None) / hi) ** GAMMA * hi
    axes = [np.linspace(-1, 1, n) for n in image.shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    a = rng.normal(size=6)
    field = a[0] * z + a[1] * y + a[2] * x + a[3] * z * y + a[4] * y * x + a[5] * (x * x - 0.5)
    field = BIAS_LOG_AMPLITUDE * field / max(float(np.abs(field).max()), 1e-6)
    return (out * np.exp(field)).astype(np.float32)


def write_shifted(cases: list[str], folder: Path) -> None:
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for i, case in enumerate(cases):
        img = sitk.ReadImage(str(DATA / "imagesTr" / f"{case}.nii.gz"))
        shifted = sitk.GetImageFromArray(shift(sitk.GetArrayFromImage(img).astype(np.float32), seed=i))
        shifted.CopyInformation(img)
        sitk.WriteImage(shifted, str(folder / "imagesTr" / f"{case}.nii.gz"), True)
        shutil.copy(DATA / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
    shutil.copy(DATA / "dataset.json", folder / "dataset.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    split = json.loads(SPLIT.read_text())
    validation = sorted(split["validation"])
    holdout = len(validation) - N_CORRECTIONS
    used, held = _split_holdout(validation, holdout, 0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_shifted(validation, tmp / "shifted")
        replay_split = tmp / "split.json"  # the parent's training cases; validation: the held-out cases, unshifted
        replay_split.write_text(json.dumps({"train": split["train"], "validation": held}))
        started = time.perf_counter()
        result = finetune(FinetuneConfig(model="hippocampus-unet3d", corrections=tmp / "shifted",
                                         out=tmp / "ft.safetensors", steps=args.steps, lr=args.lr, holdout=holdout,
                                         replay=DATA, replay_split=replay_split, force=True,
                                         num_threads=args.threads))
        seconds = time.perf_counter() - started
    if result.used != used:
        raise RuntimeError(f"the fine-tune used {result.used} corrections, not the {used} written for it; "
                           f"check the corrections folder {tmp / 'shifted'}")
    s = result.scores

    def row(kind: str) -> dict:
        return {"cases": s[kind]["before"]["cases"], "dice_before": s[kind]["before"]["dice"],
                "mean_dice_before": round(s[kind]["before"]["mean_dice"], 4), "dice_after": s[kind]["after"]["dice"],
                "mean_dice_after": round(s[kind]["after"]["mean_dice"], 4)}

    report = {
        "what": "hippocampus-unet3d fine-tuned on 10 site-shifted validation cases (bias field + gamma), "
                "replaying its training cases; Dice on the other shifted validation cases and on the same cases "
                "unshifted, before and after",
        "shift": {"gamma": GAMMA, "bias_log_amplitude": BIAS_LOG_AMPLITUDE, "bias_field": "random smooth "
                  "polynomial of degree 2 per case, scaled to the amplitude"},
        "corrections": used, "settings": {"steps": args.steps, "lr": args.lr, "batch": 2, "replayed_per_step": 1,
                                          "threads": args.threads},
        "shifted_held_out": row("holdout"), "unshifted_parent_validation": row("validation"),
        "wall_time_s": round(seconds, 1), "command": f"scripts/finetune_experiment.py --steps {args.steps} "
                                                     f"--lr {args.lr} --threads {args.threads}",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
