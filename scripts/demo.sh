#!/usr/bin/env bash
# The README's main command: set up .venv (scripts/setup.sh) and run the main job on the embedded default:
# the bundled hippocampus model on the bundled sample MRI (Resources/Samples), or on the file given.
#   scripts/demo.sh                      # Resources/Samples/hippocampus_001_T1w.nii.gz
#   scripts/demo.sh my_t1.nii.gz         # any T1w volume cropped around a hippocampus
#   MODEL=abdominal-ct-organs scripts/demo.sh ct.nii.gz   # a CT in HU (a file or a DICOM folder), 13 organs
#   MODEL=abdominal-ct-organs scripts/demo.sh Resources/Samples/abdomen_ct_example_sm.nii.gz   # the bundled CT sample
# MODEL is a bundled model's name or a checkpoint path. Test-time flips (8 passes) are on for the default
# hippocampus run and off for another model unless TTA=1 (on a full CT they multiply a CPU run's time by 8);
# the Grad-CAM map is of ACTIVATION_CLASS (default: posterior hippocampus for the default model, else the
# model's first foreground label).
# Writes out/: the Slicer segmentation, the JSON report (volumes in mL, ...), the uncertainty and
# Grad-CAM maps, and overview.png (axial/coronal/sagittal: mask above, Grad-CAM below).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
INPUT=${1:-Resources/Samples/hippocampus_001_T1w.nii.gz}
MODEL=${MODEL:-hippocampus-unet3d}
OPTIONS=()
if [[ "$MODEL" == hippocampus-unet3d ]]; then
    OPTIONS+=(--activation-class "${ACTIVATION_CLASS:-posterior hippocampus}")
    [[ "${TTA:-1}" == 1 ]] && OPTIONS+=(--tta)
else
    [[ -n "${ACTIVATION_CLASS:-}" ]] && OPTIONS+=(--activation-class "$ACTIVATION_CLASS")
    [[ "${TTA:-0}" == 1 ]] && OPTIONS+=(--tta)
fi
medseg models
medseg info "$MODEL"
mkdir -p out
medseg segment "$INPUT" --model "$MODEL" --device auto "${OPTIONS[@]}" \
    --output out/segmentation.seg.nrrd --report out/report.json --uncertainty out/uncertainty.nii.gz \
    --activation out/gradcam.nii.gz --overview out/overview.png
