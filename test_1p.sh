#!/usr/bin/env bash
# Evaluates a checkpoint on the validation split and prints Top-1/Top-5 accuracy.
#
#   bash test_1p.sh [test.py flags ...]
#   TMP_DATA_PATH=/data/imagenet_tfrecords TMP_MODEL_PATH=/ckpt/b0 bash test_1p.sh
#
# TMP_MODEL_PATH is a checkpoint folder (its newest checkpoint) or a checkpoint prefix; the model name
# and image size come from the run_config.json that train.py writes there. The TMP_* paths can be
# overridden from the environment; flags given to this script go to test.py and win. Output goes to
# the terminal and to $TMP_LOG_PATH/test_<timestamp>.log.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TMP_DATA_PATH="${TMP_DATA_PATH:-$ROOT/data/demo}"   # TFRecords with validation-* files
TMP_MODEL_PATH="${TMP_MODEL_PATH:-$ROOT/model}"     # checkpoint folder or prefix to evaluate
TMP_LOG_PATH="${TMP_LOG_PATH:-$ROOT/log}"           # where the text log goes

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/lib/launcher.sh"

log_file="$TMP_LOG_PATH/test_$(date +%Y%m%d_%H%M%S).log"
status=0
run_teed "$log_file" "[test_1p] data: $TMP_DATA_PATH | model: $TMP_MODEL_PATH | log: $log_file" \
  "$PYTHON" -u "$ROOT/test.py" --TMP_DATA_PATH="$TMP_DATA_PATH" --TMP_MODEL_PATH="$TMP_MODEL_PATH" "$@" || status=$?
echo "[test_1p] log saved to $log_file"
exit "$status"
