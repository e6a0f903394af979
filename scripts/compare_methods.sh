#!/usr/bin/env bash
# The paper's comparison on open data in one command: CycleGAN, StillGAN, MIINet and LaMEGAN trained
# on the same unpaired MRI set with the same configuration (train.json + train_compact.json), budget
# and seed, then compared on held-out data (python -m napari_uspmie compare-methods).
#
# Usage: scripts/compare_methods.sh [WORK_DIR]     (default: runs/compare_methods)
# Environment:
#   VGG19_WEIGHTS=FILE  torchvision's vgg19-dcbb9e9d.pth; without it MIINet (VGG19 of images) is
#                       skipped and said so. LaMEGAN uses the compact configuration's weight-free
#                       "lassim" perceptual term either way (the shipped model's setting).
#   THREADS (torch threads per training, default 1), PARALLEL=0 to train one after the other.
# Runs that already hold a model.pt are reused (the shipped model's script writes lamegan/ and
# cyclegan/ with this layout), so the comparison can be extended without retraining.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/compare_methods}
mkdir -p "$WORK"
# shellcheck source=scripts/compact_training.sh
. scripts/compact_training.sh
[ -d "$WORK/data/heldout" ] || python -m napari_uspmie.research.mri_dataset "$WORK/data" --seed 0

# method id -> extra overrides; every method keeps the compact configuration's identity weight 0.5
declare -A OVERRIDES=(
    [lamegan]="--method lamegan --perceptual_loss lassim"
    [cyclegan]="--method cyclegan --perceptual_loss none"
    [stillgan]="--method stillgan --perceptual_loss none"
    [miinet]="--method miinet --perceptual_loss vgg19 --lambda_perceptual 0.5"
)
SKIPPED=()
train() {
    local name=$1
    if [ -f "$WORK/$name/models/model.pt" ]; then
        echo "reusing $WORK/$name/models/model.pt"
        return
    fi
    # shellcheck disable=SC2086  # the overrides are several words on purpose
    train_compact "$name" ${OVERRIDES[$name]} "${@:2}"
}

METHODS=(cyclegan stillgan lamegan)
if [ -n "${VGG19_WEIGHTS:-}" ]; then
    METHODS+=(miinet)
else
    SKIPPED+=(--skipped "MIINet=its perceptual term needs VGG19 ImageNet weights, not available offline; rerun with VGG19_WEIGHTS=vgg19-dcbb9e9d.pth")
fi
start=$(date +%s)
for name in "${METHODS[@]}"; do
    extra=()
    [ "$name" = miinet ] && extra=(--vgg_weights "$VGG19_WEIGHTS")
    if [ "$PARALLEL" = 1 ]; then train "$name" "${extra[@]}" & else train "$name" "${extra[@]}"; fi
done
wait
echo "training took $(($(date +%s) - start)) s"

MODELS=()
for name in "${METHODS[@]}"; do
    case $name in
        cyclegan) label=CycleGAN ;; stillgan) label=StillGAN ;; miinet) label=MIINet ;; lamegan) label=LaMEGAN ;;
    esac
    MODELS+=(--model "$label=$WORK/$name/models/model.pt")
done
python -m napari_uspmie compare-methods "$WORK/data" "${MODELS[@]}" "${SKIPPED[@]}" --every 4 \
    --out "$WORK/comparison.md"
