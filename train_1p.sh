#!/usr/bin/env bash
# Trains EfficientNet on one device (Ascend NPU when npu_bridge imports, else GPU, else CPU).
#
#   bash train_1p.sh [train.py flags ...]
#   TMP_DATA_PATH=/data/imagenet_tfrecords TMP_MODEL_PATH=/ckpt/b0 bash train_1p.sh --batch_size=256
#
# The TMP_* paths below can be overridden from the environment; flags given to this script go to
# train.py after the defaults, so they win. Output goes to the terminal and to
# $TMP_LOG_PATH/train_<timestamp>.log. A run resumes from the newest checkpoint in TMP_MODEL_PATH.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TMP_DATA_PATH="${TMP_DATA_PATH:-$ROOT/data/demo}"       # TFRecords: train-* and validation-* files
TMP_MODEL_PATH="${TMP_MODEL_PATH:-$ROOT/model}"         # this run's checkpoints and run_config.json
TMP_LOG_PATH="${TMP_LOG_PATH:-$ROOT/log}"               # TensorBoard summaries and the text log
TMP_WEIGHTS_PATH="${TMP_WEIGHTS_PATH:-$ROOT/weights}"   # pretrained checkpoint; an empty folder = from scratch

# DEMO_ARGS: the recipe used only when TMP_DATA_PATH is the bundled demo data (data/demo, 10 digit
# classes at 32x32): B0 from scratch, >= 0.95 top-1 in a few minutes on 2 CPU cores.
# For ImageNet or your own data they are not used: pass your own flags instead, for example
#   --batch_size=256 --optimizer=rmsprop --learning_rate=0.016 --lr_schedule=exponential
#   --warmup_epochs=5 --epochs=350      (the official B0 recipe scaled to one device)
# or, to fine-tune from TMP_WEIGHTS_PATH, the defaults of train.py plus --epochs/--learning_rate.
DEMO_ARGS=(--image_size=32 --optimizer=adam --learning_rate=3e-3 --lr_schedule=cosine --max_steps=1000
           --batch_size=32 --min_crop_area=1.0 --norandom_flip --log_every_n_steps=100 --save_checkpoints_steps=500)

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"

_real_dir() { (cd "$1" 2>/dev/null && pwd -P); }
recipe=()
if [ "$(_real_dir "$TMP_DATA_PATH")" = "$(_real_dir "$ROOT/data/demo")" ]; then
  recipe=("${DEMO_ARGS[@]}")
  recipe_yields_run_length "$@"
fi

mkdir -p "$TMP_LOG_PATH"
log_file="$TMP_LOG_PATH/train_$(date +%Y%m%d_%H%M%S).log"
header="[train_1p] data: $TMP_DATA_PATH | model: $TMP_MODEL_PATH | weights: $TMP_WEIGHTS_PATH | log: $log_file"
status=0
{
  echo "$header${recipe[*]:+ | demo recipe: ${recipe[*]}}"
  "$PYTHON" -u "$ROOT/train.py" \
    --TMP_DATA_PATH="$TMP_DATA_PATH" --TMP_MODEL_PATH="$TMP_MODEL_PATH" \
    --TMP_LOG_PATH="$TMP_LOG_PATH" --TMP_WEIGHTS_PATH="$TMP_WEIGHTS_PATH" \
    "${recipe[@]}" "$@"
} 2>&1 | tee "$log_file" || status=$?
echo "[train_1p] log saved to $log_file"
exit "$status"
