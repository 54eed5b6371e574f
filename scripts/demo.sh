#!/usr/bin/env bash
# The README's main command: set up .venv (scripts/setup.sh) and run the main job on the embedded default:
# the bundled hippocampus model on the bundled sample MRI (Resources/Samples), or on the file given.
#   scripts/demo.sh                      # Resources/Samples/hippocampus_001_T1w.nii.gz
#   scripts/demo.sh my_t1.nii.gz         # any T1w volume cropped around a hippocampus
# Writes out/: the Slicer segmentation, the JSON report (volumes in mL, ...), the uncertainty and
# Grad-CAM maps, and overview.png (axial/coronal/sagittal: mask above, Grad-CAM below).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
INPUT=${1:-Resources/Samples/hippocampus_001_T1w.nii.gz}
MODEL=${MODEL:-hippocampus-unet3d}
medseg models
medseg info "$MODEL"
mkdir -p out
medseg segment "$INPUT" --model "$MODEL" --device auto --tta \
    --output out/segmentation.seg.nrrd --report out/report.json --uncertainty out/uncertainty.nii.gz \
    --activation out/gradcam.nii.gz --activation-class "posterior hippocampus" --overview out/overview.png
