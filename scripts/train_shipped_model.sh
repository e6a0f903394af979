#!/usr/bin/env bash
# Reproduce the shipped demo model in one command:
#   1. build the unpaired MRI dataset from files inside PyPI packages (seed 0),
#   2. train LaMEGAN (perceptual_loss "lassim") and the CycleGAN baseline (perceptual_loss "none")
#      with the same configuration, budget (the epochs of train_compact.json) and seed, side by side,
#   3. write the evaluation (cases a-d, targets, structure-guard calibration) on held-out data,
#   4. with COPY=1, install the LaMEGAN generator, its architecture and the NIQE model in
#      monai_bundle/models/, the evaluation as monai_bundle/docs/evaluation.md, and the guard's
#      calibrated thresholds as structure_thresholds in monai_bundle/configs/metadata.json.
#      Training itself never writes into the bundle.
#
# Usage: scripts/train_shipped_model.sh [WORK_DIR]     (default: runs/shipped_model)
# Environment: THREADS (torch threads per training, default 1), PARALLEL=0 to train one after
# the other, COPY=1 to overwrite the shipped weights. A GPU is used automatically when present.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/shipped_model}
mkdir -p "$WORK"
# shellcheck source=scripts/compact_training.sh
. scripts/compact_training.sh

python -m napari_uspmie.research.mri_dataset "$WORK/data" --seed 0

start=$(date +%s)
if [ "$PARALLEL" = 1 ]; then
    train_compact lamegan &
    train_compact cyclegan --perceptual_loss none &
    wait
else
    train_compact lamegan
    train_compact cyclegan --perceptual_loss none
fi
echo "training took $(($(date +%s) - start)) s"

python -m napari_uspmie.research.evaluation "$WORK/data" \
    --model "CycleGAN=$WORK/cyclegan/models/model.pt" \
    --model "LaMEGAN=$WORK/lamegan/models/model.pt" \
    --out "$WORK/evaluation.md"

if [ "${COPY:-0}" = 1 ]; then
    cp "$WORK/lamegan/models/model.pt" "$WORK/lamegan/models/model_config.json" monai_bundle/models/
    cp "$WORK/data/niqe_pristine.npz" monai_bundle/models/niqe_pristine.npz
    cp "$WORK/evaluation.md" monai_bundle/docs/evaluation.md
    python - "$WORK/evaluation.json" <<'PY'
import json, sys
thresholds = json.load(open(sys.argv[1]))["guard_thresholds"]
path = "monai_bundle/configs/metadata.json"
metadata = json.load(open(path))
metadata["structure_thresholds"] = thresholds
with open(path, "w") as f:
    json.dump(metadata, f, indent=4)
    f.write("\n")
PY
    echo "installed the LaMEGAN generator, its evaluation and guard thresholds in monai_bundle/"
fi
