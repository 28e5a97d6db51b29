#!/usr/bin/env bash
# The ModelZoo test scripts' implementation: test/train_{full,performance}_{1p,8p}.sh call it as
#   bash scripts/modelzoo_test.sh acc|perf 1p|8p [options]
# acc trains EfficientNet, then evaluates it on the validation split; perf trains a short run without
# evaluation (no checkpoints inside the timed steps). Both print the "Final result" block and write
# $output_path/${CaseName}.log (CaseName ..._acc or ..._perf). 8p trains on RANK_SIZE Ascend devices
# (default 8) of the rank table RANK_TABLE_FILE, one process per device (see --help).
#
# Runs on the NPU when npu_bridge imports (after CANN's set_env.sh), else on GPU or CPU (1p only).
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="$1" scale="$2"
shift 2 || true
case "$kind" in
  acc) script="train_full_$scale.sh" ;;
  perf) script="train_performance_$scale.sh" ;;
  *) echo "[Error] scripts/modelzoo_test.sh: the first argument is acc or perf, got \"$kind\"" >&2; exit 1 ;;
esac
case "$scale" in
  1p) multi=false; export RANK_SIZE=1 RANK_ID=0 ;;
  8p) multi=true; export RANK_SIZE="${RANK_SIZE:-8}" ;;
  *) echo "[Error] scripts/modelzoo_test.sh: the second argument is 1p or 8p, got \"$scale\"" >&2; exit 1 ;;
esac

export JOB_ID="${JOB_ID:-10087}"
export ASCEND_DEVICE_ID="${ASCEND_DEVICE_ID:-0}"
export ASCEND_GLOBAL_LOG_LEVEL="${ASCEND_GLOBAL_LOG_LEVEL:-3}"
# TF INFO logs carry the adapter's "The model has been compiled on the Ascend AI processor" line.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-0}"
usage() {
  cat <<EOF
usage: bash test/$script --data_path=DIR [options] [train.py flags]
  --recipe=NAME           demo, official or finetune (effnet/training/recipes.py); default: demo on the
                          bundled demo data, else official
  --data_path=DIR         TFRecords with train-* and validation-* files (required)
  --output_path=DIR       log, checkpoints (ckpt/) and results; default test/output/\$ASCEND_DEVICE_ID
                          (8p: test/output, one folder per device; rank 0's holds ckpt/ and the results)
  --batch_size=N          images per step and device; default: the recipe's (the learning rate follows
                          the global batch, batch_size x RANK_SIZE)
  --train_steps=N         training steps; default: the recipe's run length (acc) or its perf_steps (perf)
  --train_epochs=N        training epochs, instead of --train_steps
  --ckpt_path=PATH        pretrained weights to start from (checkpoint prefix or folder; train.py's
                          TMP_WEIGHTS_PATH, named ckpt_path by the ModelZoo contract); not where the
                          run's checkpoints go (OUTPUT/ckpt); default: from scratch
  --precision_mode=MODE   NPU precision mode; default allow_mix_precision
  --over_dump=True        NPU: dump overflowing operators to OUTPUT/overflow_dump
  --data_dump_flag=True   NPU: dump operator data at --data_dump_step to OUTPUT/data_dump
  --data_dump_step=STEPS  steps to dump, e.g. 10 or 0|5|10-20; default 10
  --profiling=True        NPU: collect a profile into OUTPUT/profiling
  --use_mixlist=True      NPU: edit the mixed-precision lists with --mixlist_file
  --mixlist_file=FILE     default configs/ops_info.json (see configs/README.md)
  --fusion_off_flag=True  NPU: switch off the fusion passes of --fusion_off_file
  --fusion_off_file=FILE  default configs/fusion_switch.cfg
  --auto_tune=True        NPU: tune operators while compiling (auto_tune_mode RL,GA)
  --server_index=K        8p on several servers: this server's index in RANK_TABLE_FILE; default 0
  --bind_core=True        8p: bind each process to its share of the CPU cores
  --help                  this text
8p: RANK_SIZE (default 8, all servers' devices), RANK_TABLE_FILE (scripts/make_rank_table.py writes
it) and JOB_ID (default 10087) come from the environment.
Other --flag=value arguments go to train.py as they are and win over the defaults.
EOF
}

# shellcheck disable=SC1091
source "$ROOT/scripts/lib/launcher.sh"

data_path="" output_path="" batch_size="" train_steps="" train_epochs="" ckpt_path="" precision_mode=""
over_dump=False data_dump_flag=False data_dump_step=10 profiling=False
use_mixlist=False mixlist_file="$ROOT/configs/ops_info.json" fusion_off_flag=False
fusion_off_file="$ROOT/configs/fusion_switch.cfg" auto_tune=False
extra_args=()
for para in "$@"; do
  rank_option "$para" && continue
  case "$para" in
    --data_path=*) data_path="${para#*=}" ;;
    --output_path=*) output_path="${para#*=}" ;;
    --batch_size=*) batch_size="${para#*=}" ;;
    --train_steps=*) train_steps="${para#*=}" ;;
    --train_epochs=*) train_epochs="${para#*=}" ;;
    --ckpt_path=*) ckpt_path="${para#*=}" ;;
    --precision_mode=*) precision_mode="${para#*=}" ;;
    --over_dump|--over_dump=*) over_dump="$(bool_value "$para")" ;;
    --data_dump_flag|--data_dump_flag=*) data_dump_flag="$(bool_value "$para")" ;;
    --data_dump_step=*) data_dump_step="${para#*=}" ;;
    --profiling|--profiling=*) profiling="$(bool_value "$para")" ;;
    --use_mixlist|--use_mixlist=*) use_mixlist="$(bool_value "$para")" ;;
    --mixlist_file=*) mixlist_file="${para#*=}" ;;
    --fusion_off_flag|--fusion_off_flag=*) fusion_off_flag="$(bool_value "$para")" ;;
    --fusion_off_file=*) fusion_off_file="${para#*=}" ;;
    --auto_tune|--auto_tune=*) auto_tune="$(bool_value "$para")" ;;
    --help|-h) usage; exit 0 ;;
    --*) extra_args+=("$para") ;;
    *) fail "unexpected argument \"$para\": options look like --name=value (see --help)" ;;
  esac
done

[ -n "$data_path" ] || fail "para \"data_path\" must be config"
[ -d "$data_path" ] || fail "data_path $data_path is not a folder: pass the folder holding the TFRecords"
for name in batch_size train_steps; do
  value="${!name}"
  if [ -n "$value" ] && ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    fail "para \"$name\" must be a positive integer, got \"$value\""
  fi
done
if [ -n "$train_epochs" ] && ! { [[ "$train_epochs" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] &&
                                  awk -v e="$train_epochs" 'BEGIN { exit !(e > 0) }'; }; then
  fail "para \"train_epochs\" must be a positive number, got \"$train_epochs\""
fi
[ -z "$train_steps" ] || [ -z "$train_epochs" ] || fail "give --train_steps or --train_epochs, not both"
[ "$use_mixlist" = False ] || [ -f "$mixlist_file" ] ||
  fail "mixlist_file $mixlist_file not found: pass --mixlist_file=FILE (configs/ops_info.json is the shipped one)"
[ "$fusion_off_flag" = False ] || [ -f "$fusion_off_file" ] ||
  fail "fusion_off_file $fusion_off_file not found: pass --fusion_off_file=FILE (configs/fusion_switch.cfg is the shipped one)"

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
if [ "$multi" = true ]; then
  # shellcheck disable=SC1091
  source "$ROOT/scripts/lib/ranks.sh"
  # The rank table is checked before anything is written or started.
  ranks_plan_npu "$server_index" || exit 1
  # One process per device; evaluation and the results on the device of rank 0 (the first local rank).
  export ASCEND_DEVICE_ID="${DEVICE_IDS[0]}"
  extra_args=(--device=npu "${extra_args[@]}")
fi

resolve_train_args --data_path="$data_path" --rank_size="$RANK_SIZE" --default_recipe=official --modelzoo="$kind" \
  ${batch_size:+--batch_size="$batch_size"} ${train_steps:+--train_steps="$train_steps"} \
  ${train_epochs:+--train_epochs="$train_epochs"} -- "${extra_args[@]}"
for arg in "${TRAIN_ARGS[@]}"; do
  case "$arg" in --batch_size=*) batch_size="${arg#*=}" ;; esac
done

if [ "$multi" = true ]; then
  output_root="$(made_dir "${output_path:-$ROOT/test/output}")"
  output_path="$output_root/$ASCEND_DEVICE_ID"
fi
output_path="$(made_dir "${output_path:-$ROOT/test/output/$ASCEND_DEVICE_ID}")"
model_path="$output_path/ckpt"
if [ -n "$(ls -A "$model_path" 2>/dev/null)" ]; then
  # Never resume or delete an earlier run: keep it beside the new one.
  kept="$output_path/ckpt_$(date +%Y%m%d_%H%M%S)"
  mv "$model_path" "$kept"
  echo "[$script] the earlier run's checkpoints were moved to $kept"
fi

device_args=()
[ -z "$precision_mode" ] || device_args+=(--precision_mode="$precision_mode")
# Files are passed as absolute paths, as the adapter wants them.
[ "$use_mixlist" = False ] || device_args+=(--modify_mixlist="$(real_dir "$(dirname "$mixlist_file")")/$(basename "$mixlist_file")")
[ "$fusion_off_flag" = False ] ||
  device_args+=(--fusion_switch_file="$(real_dir "$(dirname "$fusion_off_file")")/$(basename "$fusion_off_file")")
train_device_args=("${device_args[@]}")
[ "$auto_tune" = False ] || train_device_args+=(--auto_tune)
dump_path="$output_path/overflow_dump"
[ "$over_dump" = False ] || train_device_args+=(--over_dump --over_dump_path="$dump_path")
if [ "$data_dump_flag" = True ]; then
  # The adapter has one dump folder: with --over_dump both dumps share it.
  [ "$over_dump" = True ] || dump_path="$output_path/data_dump"
  train_device_args+=(--data_dump_flag --data_dump_step="$data_dump_step" --data_dump_path="$dump_path")
fi
[ "$profiling" = False ] || train_device_args+=(--profiling --profiling_dump_path="$output_path/profiling")

log_file="$output_path/train_${ASCEND_DEVICE_ID}.log"

# Runs a python command with its output appended to the log; on failure shows the log's end and exits.
run_logged() {
  local what="$1"
  shift
  if ! "$PYTHON" -u "$@" >>"$log_file" 2>&1; then
    echo "[Error] $what failed; the end of $log_file:" >&2
    tail -n 15 "$log_file" >&2
    exit 1
  fi
}

echo "[$script] data: $data_path | output: $output_path | log: $log_file"
echo "[$script] recipe $RECIPE: train.py ${TRAIN_ARGS[*]}"
: >"$log_file"
start_time=$(date +%s)
train_command=("$ROOT/train.py" --TMP_DATA_PATH="$data_path" --TMP_MODEL_PATH="$model_path"
               --TMP_LOG_PATH="$output_path" --TMP_WEIGHTS_PATH="$ckpt_path" "${train_device_args[@]}" "${TRAIN_ARGS[@]}")
if [ "$multi" = false ]; then
  run_logged training "${train_command[@]}"
else
  echo "[$script] $RANK_SIZE ranks, server $server_index: ranks ${RANK_IDS[*]} on devices ${DEVICE_IDS[*]}," \
       "logs in $output_root/<device>/train_<device>.log"
  device_log() {
    mkdir -p "$output_root/$2"
    echo "$output_root/$2/train_$2.log"
  }
  ranks_start_all_npu "$bind_core" device_log "$PYTHON" -u "${train_command[@]}"
  ranks_wait || { echo "[Error] training failed" >&2; exit 1; }
  if [ "${RANK_IDS[0]}" != 0 ]; then
    echo "[$script] server $server_index done in $(( $(date +%s) - start_time ))s; server 0 reports the results"
    exit 0
  fi
fi
e2e_time=$(( $(date +%s) - start_time ))
if [ $kind = acc ]; then
  echo "[$script] training done in ${e2e_time}s; evaluating $model_path"
  # Evaluation is one process, on rank 0's device.
  RANK_SIZE=1 RANK_ID=0 run_logged evaluation "$ROOT/test.py" --TMP_DATA_PATH="$data_path" \
    --TMP_MODEL_PATH="$model_path" --batch_size="$batch_size" "${device_args[@]}"
fi

package_module effnet.launch.modelzoo_result --log_file="$log_file" \
  --kind="$kind" --rank_size="$RANK_SIZE" --batch_size="$batch_size" --e2e_seconds="$e2e_time" \
  --output_path="$output_path" --script="$script"
