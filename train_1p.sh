#!/usr/bin/env bash
# Trains EfficientNet on one device (Ascend NPU when npu_bridge imports, else GPU, else CPU).
#
#   bash train_1p.sh [--recipe=demo|official|finetune] [train.py flags ...]
#   TMP_DATA_PATH=/data/imagenet_tfrecords TMP_MODEL_PATH=/ckpt/b0 bash train_1p.sh --recipe=official
#
# The TMP_* paths below can be overridden from the environment. The recipe (effnet/training/recipes.py)
# is `demo` on the bundled demo data and `finetune` (train.py's defaults) on other data unless --recipe
# says otherwise; flags given to this script go to train.py after the recipe's, so they win. Output goes
# to the terminal and to $TMP_LOG_PATH/train_<timestamp>.log. A run resumes from the newest checkpoint
# in TMP_MODEL_PATH.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TMP_DATA_PATH="${TMP_DATA_PATH:-$ROOT/data/demo}"       # TFRecords: train-* and validation-* files
TMP_MODEL_PATH="${TMP_MODEL_PATH:-$ROOT/model}"         # this run's checkpoints and run_config.json
TMP_LOG_PATH="${TMP_LOG_PATH:-$ROOT/log}"               # TensorBoard summaries and the text log
TMP_WEIGHTS_PATH="${TMP_WEIGHTS_PATH:-$ROOT/weights}"   # pretrained checkpoint; an empty folder = from scratch

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/lib/launcher.sh"
resolve_train_args --data_path="$TMP_DATA_PATH" --rank_size=1 -- "$@"

log_file="$TMP_LOG_PATH/train_$(date +%Y%m%d_%H%M%S).log"
status=0
run_teed "$log_file" \
  "[train_1p] data: $TMP_DATA_PATH | model: $TMP_MODEL_PATH | weights: $TMP_WEIGHTS_PATH | log: $log_file
[train_1p] recipe $RECIPE: train.py ${TRAIN_ARGS[*]}" \
  "$PYTHON" -u "$ROOT/train.py" --TMP_DATA_PATH="$TMP_DATA_PATH" --TMP_MODEL_PATH="$TMP_MODEL_PATH" \
  --TMP_LOG_PATH="$TMP_LOG_PATH" --TMP_WEIGHTS_PATH="$TMP_WEIGHTS_PATH" "${TRAIN_ARGS[@]}" || status=$?
echo "[train_1p] log saved to $log_file"
exit "$status"
