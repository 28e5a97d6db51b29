#!/usr/bin/env bash
# ModelZoo test script, one device: trains EfficientNet, then evaluates it on the validation split,
# prints the "Final result" block and writes $output_path/${CaseName}.log.
# test/train_performance_1p.sh sources this file: a script whose name holds "performance" runs a
# short training without evaluation instead (CaseName ..._perf). test/train_full_8p.sh and
# test/train_performance_8p.sh source it too: a name without "_1p" trains on RANK_SIZE Ascend
# devices (default 8) of the rank table RANK_TABLE_FILE, one process per device (see --help).
#
#   bash test/train_full_1p.sh --data_path=/data/imagenet_tfrecords [--batch_size=256] [--train_epochs=350]
#   bash test/train_full_1p.sh --data_path=data/demo     # bundled demo data: a few minutes on 2 CPU cores
#   RANK_TABLE_FILE=$PWD/rank_table_8p.json bash test/train_full_8p.sh --data_path=/data/imagenet_tfrecords
#
# Runs on the NPU when npu_bridge imports (after CANN's set_env.sh), else on GPU or CPU (1p only).
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
script="$(basename "$0")"
case "$script" in
  *performance*) kind=perf ;;
  *) kind=acc ;;
esac
case "$script" in
  *_1p*) multi=false; export RANK_SIZE=1 RANK_ID=0 ;;
  *) multi=true; export RANK_SIZE="${RANK_SIZE:-8}" ;;
esac

export JOB_ID="${JOB_ID:-10087}"
export ASCEND_DEVICE_ID="${ASCEND_DEVICE_ID:-0}"
export ASCEND_GLOBAL_LOG_LEVEL="${ASCEND_GLOBAL_LOG_LEVEL:-3}"
# TF INFO logs carry the adapter's "The model has been compiled on the Ascend AI processor" line.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-0}"
Network="EfficientNet_for_TensorFlow"

# DEMO_ARGS: the recipe for the bundled demo data (data/demo), the same as in train_1p.sh:
# B0 from scratch at 32x32, >= 0.95 top-1 in a few minutes on 2 CPU cores.
DEMO_ARGS=(--image_size=32 --optimizer=adam --learning_rate=3e-3 --lr_schedule=cosine --max_steps=1000
           --batch_size=32 --min_crop_area=1.0 --norandom_flip --log_every_n_steps=100 --save_checkpoints_steps=500)
# Any other data (ImageNet): the official B0 recipe (RMSProp, 5 warm-up epochs, x0.97 every 2.4 epochs,
# 350 epochs); the learning rate is 0.016 x global batch / 256, the global batch batch_size x RANK_SIZE.
IMAGENET_BATCH_SIZE=256
IMAGENET_EPOCHS=350
IMAGENET_ARGS=(--optimizer=rmsprop --lr_schedule=exponential --warmup_epochs=5 --log_every_n_steps=100
               --save_checkpoints_steps=5000)
# The performance run: this many steps, no evaluation.
PERF_STEPS_DEMO=60
PERF_STEPS=1000

usage() {
  cat <<EOF
usage: bash test/$script --data_path=DIR [options] [train.py flags]
  --data_path=DIR         TFRecords with train-* and validation-* files (required)
  --output_path=DIR       log, checkpoints (ckpt/) and results; default test/output/\$ASCEND_DEVICE_ID
                          (8p: test/output, one folder per device; rank 0's holds ckpt/ and the results)
  --batch_size=N          images per step and device; default $IMAGENET_BATCH_SIZE, on the demo data 32 / RANK_SIZE
  --train_steps=N         training steps; default: $( [ $kind = perf ] && echo "$PERF_STEPS ($PERF_STEPS_DEMO on the demo data)" || echo "--train_epochs ($IMAGENET_EPOCHS; 600 steps on the demo data)")
  --train_epochs=N        training epochs, instead of --train_steps
  --ckpt_path=PATH        pretrained checkpoint (prefix or folder) to start from; default: from scratch
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

fail() {
  echo "[Error] $*" >&2
  exit 1
}

# The value of a True/False option given as --name, --name=True or --name=False.
switch_value() {
  local name="${1%%=*}" value="True"
  case "$1" in *=*) value="${1#*=}" ;; esac
  case "$value" in
    True|true|1) echo True ;;
    False|false|0) echo False ;;
    *) fail "para \"${name#--}\" must be True or False, got \"$value\"" ;;
  esac
}

data_path="" output_path="" batch_size="" train_steps="" train_epochs="" ckpt_path="" precision_mode=""
over_dump=False data_dump_flag=False data_dump_step=10 profiling=False server_index=0 bind_core=False
use_mixlist=False mixlist_file="$ROOT/configs/ops_info.json" fusion_off_flag=False
fusion_off_file="$ROOT/configs/fusion_switch.cfg" auto_tune=False
extra_args=()
for para in "$@"; do
  case "$para" in
    --data_path=*) data_path="${para#*=}" ;;
    --output_path=*) output_path="${para#*=}" ;;
    --batch_size=*) batch_size="${para#*=}" ;;
    --train_steps=*) train_steps="${para#*=}" ;;
    --train_epochs=*) train_epochs="${para#*=}" ;;
    --ckpt_path=*) ckpt_path="${para#*=}" ;;
    --precision_mode=*) precision_mode="${para#*=}" ;;
    --over_dump|--over_dump=*) over_dump="$(switch_value "$para")" ;;
    --data_dump_flag|--data_dump_flag=*) data_dump_flag="$(switch_value "$para")" ;;
    --data_dump_step=*) data_dump_step="${para#*=}" ;;
    --profiling|--profiling=*) profiling="$(switch_value "$para")" ;;
    --use_mixlist|--use_mixlist=*) use_mixlist="$(switch_value "$para")" ;;
    --mixlist_file=*) mixlist_file="${para#*=}" ;;
    --fusion_off_flag|--fusion_off_flag=*) fusion_off_flag="$(switch_value "$para")" ;;
    --fusion_off_file=*) fusion_off_file="${para#*=}" ;;
    --auto_tune|--auto_tune=*) auto_tune="$(switch_value "$para")" ;;
    --server_index=*) server_index="${para#*=}" ;;
    --bind_core|--bind_core=*) bind_core="$(switch_value "$para")" ;;
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
  source "$ROOT/scripts/ranks.sh"
  # The rank table is checked before anything is written or started.
  ranks_plan_npu "$server_index" || exit 1
  # One process per device; evaluation and the results on the device of rank 0 (the first local rank).
  export ASCEND_DEVICE_ID="${DEVICE_IDS[0]}"
  extra_args=(--device=npu "${extra_args[@]}")
fi

_real_dir() { (cd "$1" 2>/dev/null && pwd -P); }
if [ "$(_real_dir "$data_path")" = "$(_real_dir "$ROOT/data/demo")" ]; then
  recipe=("${DEMO_ARGS[@]}")
  batch_size="${batch_size:-$(( 32 / RANK_SIZE > 0 ? 32 / RANK_SIZE : 1 ))}"
  log_every=50
  perf_steps=$PERF_STEPS_DEMO
else
  batch_size="${batch_size:-$IMAGENET_BATCH_SIZE}"
  learning_rate="$(awk -v b="$batch_size" -v r="$RANK_SIZE" 'BEGIN { printf "%g", 0.016 * b * r / 256 }')"
  recipe=("${IMAGENET_ARGS[@]}" --learning_rate="$learning_rate" --epochs="$IMAGENET_EPOCHS")
  log_every=100
  perf_steps=$PERF_STEPS
fi
if [ $kind = perf ] && [ -z "$train_steps" ] && [ -z "$train_epochs" ]; then
  train_steps=$perf_steps
fi

run_args=(--batch_size="$batch_size")
if [ -n "$train_steps" ]; then
  run_args+=(--max_steps="$train_steps")
  # Short runs log about ten times: the first interval (graph building) is left out of the FPS.
  log_every=$(( train_steps / 10 < 1 ? 1 : (train_steps / 10 < log_every ? train_steps / 10 : log_every) ))
elif [ -n "$train_epochs" ]; then
  run_args+=(--epochs="$train_epochs" --max_steps=0)
fi
run_args+=(--log_every_n_steps="$log_every")
if [ $kind = perf ]; then
  # No checkpoints inside the timed steps (the last step is always saved); on the NPU, one loop per
  # log line, so a short run still has several timed intervals.
  run_args+=(--save_checkpoints_steps=0)
  [ "$log_every" -ge 100 ] || run_args+=(--iterations_per_loop="$log_every")
fi

if [ "$multi" = true ]; then
  output_root="${output_path:-$ROOT/test/output}"
  mkdir -p "$output_root"
  output_root="$(cd "$output_root" && pwd)"
  output_path="$output_root/$ASCEND_DEVICE_ID"
fi
output_path="${output_path:-$ROOT/test/output/$ASCEND_DEVICE_ID}"
mkdir -p "$output_path"
output_path="$(cd "$output_path" && pwd)"
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
[ "$use_mixlist" = False ] || device_args+=(--modify_mixlist="$(_real_dir "$(dirname "$mixlist_file")")/$(basename "$mixlist_file")")
[ "$fusion_off_flag" = False ] ||
  device_args+=(--fusion_switch_file="$(_real_dir "$(dirname "$fusion_off_file")")/$(basename "$fusion_off_file")")
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

BatchSize="$batch_size"
CaseName="${Network}_bs${BatchSize}_${RANK_SIZE}p_${kind}"
log_file="$output_path/train_${ASCEND_DEVICE_ID}.log"
loss_file="$output_path/${CaseName}_loss.txt"
result_file="$output_path/${CaseName}.log"

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
: >"$log_file"
start_time=$(date +%s)
train_command=("$ROOT/train.py" --TMP_DATA_PATH="$data_path" --TMP_MODEL_PATH="$model_path"
               --TMP_LOG_PATH="$output_path" --TMP_WEIGHTS_PATH="$ckpt_path"
               "${recipe[@]}" "${run_args[@]}" "${train_device_args[@]}" "${extra_args[@]}")
if [ "$multi" = false ]; then
  run_logged training "${train_command[@]}"
else
  echo "[$script] $RANK_SIZE ranks, server $server_index: ranks ${RANK_IDS[*]} on devices ${DEVICE_IDS[*]}," \
       "logs in $output_root/<device>/train_<device>.log"
  for i in "${!RANK_IDS[@]}"; do
    device_id="${DEVICE_IDS[$i]}"
    mkdir -p "$output_root/$device_id"
    cores=""
    [ "$bind_core" = False ] || cores="$(ranks_cores "$i" "${#RANK_IDS[@]}")"
    ranks_start_npu "${RANK_IDS[$i]}" "$device_id" "$output_root/$device_id/train_$device_id.log" "$cores" \
      "$PYTHON" -u "${train_command[@]}"
  done
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

# The last value of "<label> X" lines in the log, or "" when there is none.
last_value() {
  grep -F "$1" "$log_file" | tail -n 1 | awk '{ print $NF }' || true
}
FPS="$(last_value "Final Performance images/sec :")"
# The accuracy run reports the evaluation's top-1 (train.py's "Final Train Accuracy" is on training batches).
train_accuracy="$(last_value "Top-1 acc:")"
grep -oE " step [0-9]+/[0-9]+ loss [^ ]+" "$log_file" | awk '{ print $4 }' >"$loss_file" || true
ActualLoss="$(tail -n 1 "$loss_file")"
if [[ "$FPS" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v f="$FPS" 'BEGIN { exit !(f > 0) }'; then
  TrainingTime="$(awk -v b="$BatchSize" -v r="$RANK_SIZE" -v f="$FPS" 'BEGIN { printf "%.2f", b * r * 1000 / f }')"
else
  echo "[Warning] no images/sec in the log: train for more steps (the first log interval is not timed)"
  FPS="n/a" TrainingTime="n/a"
fi

device="$(grep -oE "device: device=[a-z]+" "$log_file" | head -n 1 | cut -d= -f2 || true)"
echo "[$script] device: ${device:-unknown}"
# The newer ModelZoo scripts look for the adapter's compile line; a missing one is a warning, never a failure.
if [ "$device" != npu ]; then
  echo "[Warning] the model was not compiled on the Ascend AI processor: this run used ${device:-an unknown device}"
elif ! grep -qF "The model has been compiled on the Ascend AI processor" "$log_file"; then
  echo "[Warning] the device was npu but $log_file lacks \"The model has been compiled on the Ascend AI" \
       "processor\": check that the graph ran on the NPU (TF_CPP_MIN_LOG_LEVEL above 0 also hides that line)"
fi

echo "------------------ Final result ------------------"
echo "Final Performance images/sec : $FPS"
[ $kind = perf ] || echo "Final Train Accuracy : $train_accuracy"
echo "E2E Training Duration sec : $e2e_time"

{
  echo "Network = ${Network}"
  echo "RankSize = ${RANK_SIZE}"
  echo "BatchSize = ${BatchSize}"
  echo "DeviceType = $(uname -m)"
  echo "CaseName = ${CaseName}"
  echo "ActualFPS = ${FPS}"
  echo "TrainingTime = ${TrainingTime}"
  [ $kind = perf ] || echo "TrainAccuracy = ${train_accuracy}"
  echo "ActualLoss = ${ActualLoss}"
  echo "E2ETrainingTime = ${e2e_time}"
} >"$result_file"
echo "[$script] results in $result_file"
