#!/usr/bin/env bash
# Train the bundled `hippocampus-unet3d` candidate: a 3D U-Net (width 0.25 = 16 base channels, depth 4,
# instance norm, 1.4 M parameters) on MSD Task04 Hippocampus, on CPU (2 threads, about 75 min on 2 cores).
# hippocampus_001 and hippocampus_003 (shipped in Resources/Samples) are kept in the validation split.
#
#   scripts/train_hippocampus.sh                 # foreground
#   mkdir -p runs/hippocampus-unet3d && nohup setsid scripts/train_hippocampus.sh \
#       > runs/hippocampus-unet3d/train.log 2>&1 &     # background, survives the shell
#   scripts/train_hippocampus.sh --resume        # continue an interrupted run from last.safetensors
#
# Writes runs/hippocampus-unet3d/{best,last}.safetensors, split.json, log.csv, curves.png.
# DATA, OUT and THREADS may be overridden from the environment; extra arguments go to `medseg train`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/hippocampus}
OUT=${OUT:-runs/hippocampus-unet3d}
THREADS=${THREADS:-2}
# Sleeping (not spinning) OpenMP threads: on a shared machine, spinning threads slow each other several-fold.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
exec nice -n 10 .venv/bin/python -m medseg.train \
    --data "$DATA" --out "$OUT" --name hippocampus-unet3d \
    --summary "3D U-Net segmenting the anterior and posterior hippocampus on T1w MRI crops (MSD Task04)" \
    --arch unet --width 0.25 --depth 4 --norm instance \
    --patch 40 56 40 --batch 2 --epochs 60 --steps-per-epoch 100 \
    --optimizer adam --lr 1e-3 --schedule poly --loss ce_dice \
    --val-fraction 0.2 --val-include hippocampus_001 hippocampus_003 --val-every 4 \
    --seed 0 --device cpu --threads "$THREADS" "$@"
