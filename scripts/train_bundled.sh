#!/usr/bin/env bash
# Train one of the bundled models on ../shared/data, on CPU by default (the runs behind Resources/Models).
#
#   scripts/train_bundled.sh MODEL [medseg train arguments...]
#     MODEL: hippocampus-unet3d | hippocampus-unetpp | left-atrium-vnet | abdominal-ct-organs[-3mm]
#   mkdir -p runs/MODEL && nohup setsid scripts/train_bundled.sh MODEL > runs/MODEL/train.log 2>&1 &
#   scripts/train_bundled.sh MODEL --resume      # continue an interrupted run from last.safetensors
#
# Writes runs/MODEL/{best,last}.safetensors, split.json, log.csv, curves.png; then
# `scripts/bundle_model.py runs/MODEL/best.safetensors ...` copies a checkpoint into Resources/Models.
# OUT, THREADS and DEVICE may be overridden from the environment (DEVICE=cuda on a GPU machine); extra
# arguments go to `medseg train` and win over the ones below.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?"name the model: hippocampus-unet3d, hippocampus-unetpp, left-atrium-vnet or abdominal-ct-organs[-3mm]"}
shift
OUT=${OUT:-runs/$MODEL}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
HIPPOCAMPUS=(--data ../shared/data/hippocampus --val-fraction 0.2
             --val-include hippocampus_001 hippocampus_003 --val-every 4)
case "$MODEL" in
  hippocampus-unet3d)   # 1.4 M parameters; 60 epochs took 60 min on 2 cores, then resumed to 100
    ARGS=("${HIPPOCAMPUS[@]}"
          --summary "3D U-Net segmenting the anterior and posterior hippocampus on T1w MRI crops (MSD Task04)"
          --arch unet --width 0.25 --depth 4 --norm instance --patch 40 56 40 --batch 2
          --epochs 60 --steps-per-epoch 100 --loss ce_dice) ;;
  hippocampus-unetpp)   # 6.6 M parameters, deep supervision over the four heads (prunable L1-L4); the bundled
                        # run was started with --epochs 36 and resumed at epoch 11 with --epochs 40
    ARGS=("${HIPPOCAMPUS[@]}"
          --summary "UNet++ (deep supervision, prunable L1-L4) segmenting the anterior and posterior hippocampus on T1w MRI crops (MSD Task04)"
          --arch unetpp --width 0.5 --norm instance --patch 32 48 32 --batch 2
          --epochs 40 --steps-per-epoch 100 --loss ce_dice) ;;
  left-atrium-vnet)     # 4.1 M parameters, trained at 1.25 mm (half the data's 0.625 mm resolution); the bundled
                        # run was started with --epochs 50 and resumed at epoch 18 with --epochs 60
    ARGS=(--data ../shared/data/left_atrium --val-fraction 0.2 --val-every 4
          --summary "V-Net segmenting the left atrium cavity on LGE-MRI (2018 Atrial Segmentation Challenge, UA-MT crops)"
          --arch vnet --width 0.25 --norm instance --spacing 1.25 1.25 1.25 --patch 32 64 64 --batch 2
          --epochs 60 --steps-per-epoch 100 --loss ce_dice) ;;
  abdominal-ct-organs)  # 1.4 M parameters at 5 mm (about 1.5 s per step on 2 idle CPU cores): the 3 mm recipe below
                        # needed 5 s per step and found only the liver after 650 steps, so this coarser one trades
                        # boundary detail for 4x the steps. CT clipped to the [-125, 275] HU the BTCV data survive
                        # in; no mirroring (left and right kidneys and adrenals); 6 validation cases (MONAI's split).
                        # The bundled run was started with --epochs 60 and resumed at epoch 15 with --epochs 48 and at
                        # epoch 20 with --epochs 70 (to end within the session): 70 x 50 steps, 92 min
    ARGS=(--data ../shared/data/btcv --val-fraction 0.25 --val-every 5
          --summary "3D U-Net segmenting 13 abdominal organs on portal-venous CT (BTCV), at 5 mm"
          --arch unet --width 0.25 --depth 4 --norm instance --spacing 5 5 5 --ct-window -125 275
          --patch 48 64 64 --batch 2 --fg-fraction 0.5 --mirror-axes
          --epochs 70 --steps-per-epoch 50 --loss ce_dice) ;;
  abdominal-ct-organs-3mm)  # the first recipe (5.7 M parameters, 3 mm, 5 s per step): stopped at epoch 26 of 150,
                            # liver only; kept resumable in runs/abdominal-ct-organs-3mm for a machine with a GPU
    ARGS=(--data ../shared/data/btcv --val-fraction 0.25 --val-every 5
          --summary "3D U-Net segmenting 13 abdominal organs on portal-venous CT (BTCV), at 3 mm"
          --arch unet --width 0.25 --depth 5 --norm instance --spacing 3 3 3 --ct-window -125 275
          --patch 64 96 96 --batch 2 --fg-fraction 0.5
          --epochs 150 --steps-per-epoch 25 --loss ce_dice) ;;
  *) echo "unknown model '$MODEL': use hippocampus-unet3d, hippocampus-unetpp, left-atrium-vnet or abdominal-ct-organs[-3mm]" >&2
     exit 2 ;;
esac
# Sleeping (not spinning) OpenMP threads: on a shared machine, spinning threads slow each other several-fold.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
exec nice -n 10 .venv/bin/python -m medseg.train --out "$OUT" --name "$MODEL" "${ARGS[@]}" \
    --optimizer adam --lr 1e-3 --schedule poly --seed 0 --device "$DEVICE" --threads "$THREADS" "$@"
