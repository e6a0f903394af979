# Sourced by train_shipped_model.sh and compare_methods.sh: one training run of the bundle with the
# compact configuration (train.json + train_compact.json) on "$WORK/data", logged to "$WORK/<name>.log",
# checkpoints and the generator in "$WORK/<name>/models". Needs WORK; extra arguments are bundle overrides.
# THREADS: torch threads per training (default 1); PARALLEL=0: the callers train one model after the other.
THREADS=${THREADS:-1}
PARALLEL=${PARALLEL:-1}
COMPACT_CONFIGS="['monai_bundle/configs/train.json','monai_bundle/configs/train_compact.json']"

train_compact() {
    local name=$1
    shift
    echo "training $name (log: $WORK/$name.log)"
    OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS python -m monai.bundle run --config_file "$COMPACT_CONFIGS" \
        --dataset_dir "$WORK/data" --ckpt_dir "$WORK/$name/models" --output_dir "$WORK/$name/runs" \
        --bundle_root "$PWD/monai_bundle" "$@" >"$WORK/$name.log" 2>&1
}
