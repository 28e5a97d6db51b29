#!/usr/bin/env bash
# Data-parallel training on several devices: one process per device, each on its share of the data,
# gradients averaged every step, rank 0's variables broadcast to all at the start.
#
# Ascend 910 (HCCL), one server with 8 devices:
#   python3 scripts/make_rank_table.py --output=rank_table_8p.json        # device IPs from /etc/hccn.conf
#   RANK_TABLE_FILE=$PWD/rank_table_8p.json bash train_8p.sh [train.py flags ...]
# Several servers (RANK_SIZE counts all devices; run the same command on each with its index):
#   RANK_SIZE=16 RANK_TABLE_FILE=$PWD/rank_table_16p.json bash train_8p.sh --server_index=1 [flags]
# GPUs or CPU processes of this machine (Horovod, installed by scripts/install_horovod.sh):
#   RANK_SIZE=4 bash train_8p.sh --device=gpu [flags]
#
# The TMP_* paths work as in train_1p.sh; TMP_MODEL_PATH should be shared by all servers (rank 0
# writes, every rank resumes from it). RANK_SIZE defaults to 8, JOB_ID to 10087. Options of this
# script: --server_index=K (NPU: which server of the rank table this is, default 0; RANK_ID =
# devices_per_server * K + i) and --bind_core (NPU: each process on its own share of the CPU cores).
# Other flags go to train.py after the defaults, so they win. --learning_rate is the rate of the
# global batch (batch_size x RANK_SIZE). Each rank logs to $TMP_LOG_PATH/train_<time>_rank<r>.log;
# this terminal follows rank 0's. Rank 0 alone writes checkpoints, run_config.json and summaries.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TMP_DATA_PATH="${TMP_DATA_PATH:-$ROOT/data/demo}"       # TFRecords: train-* and validation-* files
TMP_MODEL_PATH="${TMP_MODEL_PATH:-$ROOT/model}"         # this run's checkpoints and run_config.json
TMP_LOG_PATH="${TMP_LOG_PATH:-$ROOT/log}"               # TensorBoard summaries and the per-rank logs
TMP_WEIGHTS_PATH="${TMP_WEIGHTS_PATH:-$ROOT/weights}"   # pretrained checkpoint; an empty folder = from scratch
export RANK_SIZE="${RANK_SIZE:-8}"
export JOB_ID="${JOB_ID:-10087}"

# The demo recipe of train_1p.sh (data/demo only) with the same global batch of 32, split over the
# devices; when 32 does not divide evenly the learning rate follows the global batch linearly.
DEMO_GLOBAL_BATCH=32
DEMO_LEARNING_RATE=3e-3
DEMO_ARGS=(--image_size=32 --optimizer=adam --lr_schedule=cosine --max_steps=1000 --min_crop_area=1.0
           --norandom_flip --log_every_n_steps=100 --save_checkpoints_steps=500)

fail() {
  echo "[train_8p] error: $*" >&2
  exit 1
}

server_index=0 bind_core=false device=auto
train_args=()
for arg in "$@"; do
  case "$arg" in
    --server_index=*) server_index="${arg#*=}" ;;
    --bind_core|--bind_core=True|--bind_core=true) bind_core=true ;;
    --bind_core=False|--bind_core=false) bind_core=false ;;
    --device=*) device="${arg#*=}"; train_args+=("$arg") ;;
    *) train_args+=("$arg") ;;
  esac
done
[[ "$RANK_SIZE" =~ ^[1-9][0-9]*$ ]] || fail "RANK_SIZE=$RANK_SIZE must be a positive integer"

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/ranks.sh"

if [ "$device" = auto ]; then
  if "$PYTHON" -c 'import npu_bridge.npu_init' >/dev/null 2>&1; then device=npu; else device=horovod; fi
fi
case "$device" in
  npu) ranks_plan_npu "$server_index" || exit 1 ;;
  gpu|cpu|horovod)
    [ "$server_index" = 0 ] || fail "--server_index is for NPU servers; for GPU clusters run horovodrun -H host1:4,host2:4 yourself (see README)"
    ranks_check_horovod || exit 1 ;;
  *) fail "--device=$device: use npu, gpu, cpu or auto" ;;
esac

_real_dir() { (cd "$1" 2>/dev/null && pwd -P); }
recipe=()
if [ "$(_real_dir "$TMP_DATA_PATH")" = "$(_real_dir "$ROOT/data/demo")" ]; then
  batch=$(( DEMO_GLOBAL_BATCH / RANK_SIZE > 0 ? DEMO_GLOBAL_BATCH / RANK_SIZE : 1 ))
  learning_rate="$(awk -v r="$DEMO_LEARNING_RATE" -v b="$(( batch * RANK_SIZE ))" -v g="$DEMO_GLOBAL_BATCH" \
                   'BEGIN { printf "%g", r * b / g }')"
  recipe=("${DEMO_ARGS[@]}" --batch_size="$batch" --learning_rate="$learning_rate")
  recipe_yields_run_length "${train_args[@]}"
fi

mkdir -p "$TMP_LOG_PATH"
log_prefix="$TMP_LOG_PATH/train_$(date +%Y%m%d_%H%M%S)_rank"
command=("$PYTHON" -u "$ROOT/train.py" --TMP_DATA_PATH="$TMP_DATA_PATH" --TMP_MODEL_PATH="$TMP_MODEL_PATH"
         --TMP_LOG_PATH="$TMP_LOG_PATH" --TMP_WEIGHTS_PATH="$TMP_WEIGHTS_PATH" "${recipe[@]}" "${train_args[@]}")
echo "[train_8p] $RANK_SIZE ranks | data: $TMP_DATA_PATH | model: $TMP_MODEL_PATH | weights: $TMP_WEIGHTS_PATH" \
     "${recipe[*]:+| demo recipe: ${recipe[*]}}"
if [ "$device" = npu ]; then
  echo "[train_8p] rank table: $RANK_TABLE_FILE, server $server_index: ranks ${RANK_IDS[*]} on devices ${DEVICE_IDS[*]}"
  for i in "${!RANK_IDS[@]}"; do
    cores=""
    [ "$bind_core" = false ] || cores="$(ranks_cores "$i" "${#RANK_IDS[@]}")"
    ranks_start_npu "${RANK_IDS[$i]}" "${DEVICE_IDS[$i]}" "$log_prefix${RANK_IDS[$i]}.log" "$cores" "${command[@]}"
  done
  first_rank="${RANK_IDS[0]}"
else
  echo "[train_8p] Horovod on this machine (hosts ${HOROVOD_HOSTS:-localhost:$RANK_SIZE})"
  ranks_start_horovod "$log_prefix" "${command[@]}"
  first_rank=0
fi
echo "[train_8p] per-rank logs: $log_prefix<rank>.log; following rank $first_rank's:"
# Show the first local rank's log here while the ranks run.
tail -n +1 -f "$log_prefix$first_rank.log" &
follower=$!
status=0
ranks_wait || status=$?
sleep 0.5
kill "$follower" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
echo "[train_8p] logs: $log_prefix<rank>.log"
exit "$status"
