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
# The recipe is chosen as in train_1p.sh (--recipe=NAME, else by the data) and scaled to the global
# batch (batch_size x RANK_SIZE): the demo recipe splits its global batch of 32 over the devices, the
# others keep their batch per device; the learning rate follows the global batch linearly. Other flags
# go to train.py after the recipe's, so they win; --learning_rate is the rate of the global batch.
# Each rank logs to $TMP_LOG_PATH/train_<time>_rank<r>.log; this terminal follows rank 0's. Rank 0
# alone writes checkpoints, run_config.json and summaries.
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TMP_DATA_PATH="${TMP_DATA_PATH:-$ROOT/data/demo}"       # TFRecords: train-* and validation-* files
TMP_MODEL_PATH="${TMP_MODEL_PATH:-$ROOT/model}"         # this run's checkpoints and run_config.json
TMP_LOG_PATH="${TMP_LOG_PATH:-$ROOT/log}"               # TensorBoard summaries and the per-rank logs
TMP_WEIGHTS_PATH="${TMP_WEIGHTS_PATH:-$ROOT/weights}"   # pretrained checkpoint; an empty folder = from scratch
export RANK_SIZE="${RANK_SIZE:-8}"
export JOB_ID="${JOB_ID:-10087}"

# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/lib/launcher.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/lib/ranks.sh"

# --server_index and --bind_core are this script's; everything else, --device included, goes to train.py.
device=auto user_args=()
for arg in "$@"; do
  rank_option "$arg" || user_args+=("$arg")
  [[ "$arg" != --device=* ]] || device="${arg#*=}"
done
[[ "$RANK_SIZE" =~ ^[1-9][0-9]*$ ]] || fail "RANK_SIZE=$RANK_SIZE must be a positive integer"

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

resolve_train_args --data_path="$TMP_DATA_PATH" --rank_size="$RANK_SIZE" -- "${user_args[@]}"

mkdir -p "$TMP_LOG_PATH"
log_prefix="$TMP_LOG_PATH/train_$(date +%Y%m%d_%H%M%S)_rank"
command=("$PYTHON" -u "$ROOT/train.py" --TMP_DATA_PATH="$TMP_DATA_PATH" --TMP_MODEL_PATH="$TMP_MODEL_PATH"
         --TMP_LOG_PATH="$TMP_LOG_PATH" --TMP_WEIGHTS_PATH="$TMP_WEIGHTS_PATH" "${TRAIN_ARGS[@]}")
echo "[train_8p] $RANK_SIZE ranks | data: $TMP_DATA_PATH | model: $TMP_MODEL_PATH | weights: $TMP_WEIGHTS_PATH"
echo "[train_8p] recipe $RECIPE: train.py ${TRAIN_ARGS[*]}"
if [ "$device" = npu ]; then
  echo "[train_8p] rank table: $RANK_TABLE_FILE, server $server_index: ranks ${RANK_IDS[*]} on devices ${DEVICE_IDS[*]}"
  rank_log() { echo "$log_prefix$1.log"; }
  ranks_start_all_npu "$bind_core" rank_log "${command[@]}"
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
