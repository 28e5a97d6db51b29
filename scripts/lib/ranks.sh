# Sourced by train_8p.sh and scripts/modelzoo_test.sh (8p): starts the training processes of one
# data-parallel run and waits for them. Needs $ROOT (the package folder) and $PYTHON (scripts/env.sh).
#
#   ranks_plan_npu SERVER_INDEX  checks RANK_SIZE and RANK_TABLE_FILE (scripts/make_rank_table.py --check)
#                                before anything starts; sets RANK_IDS and DEVICE_IDS, this server's ranks
#                                and their Ascend device ids, and exports an absolute RANK_TABLE_FILE.
#                                A bad table: its one-line error on stderr, return 1.
#   ranks_start_npu RANK DEVICE LOG CORES COMMAND...
#                                starts one NPU rank in the background (RANK_ID, ASCEND_DEVICE_ID set;
#                                bound to CORES, e.g. 0-23, unless empty), its output to LOG.
#   ranks_start_all_npu BIND_CORE LOG_OF COMMAND...
#                                starts every rank of this server (RANK_IDS on DEVICE_IDS) with ranks_start_npu;
#                                `LOG_OF RANK DEVICE` prints each rank's log path; BIND_CORE True gives each rank
#                                its share of the CPU cores.
#   ranks_cores INDEX COUNT      this server's INDEX-th share of the CPU cores, as "first-last".
#   ranks_check_horovod          returns 1 with an error line when horovod.tensorflow does not import.
#   ranks_start_horovod LOG_PREFIX COMMAND...
#                                starts RANK_SIZE processes on this machine with horovodrun (Gloo or MPI),
#                                rank r's output to LOG_PREFIX<r>.log.
#   ranks_wait                   waits for every process started; when one fails, stops the others and
#                                returns its exit code. Ctrl-C or SIGTERM stops them all.

RANK_IDS=() DEVICE_IDS=()
_RANK_PIDS=() _RANK_NAMES=() _RANK_LOGS=()

_ranks_positive() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "error: $1=$2 must be a positive integer" >&2; return 1; }
}

ranks_plan_npu() {
  local server_index="$1" plan rank device
  _ranks_positive RANK_SIZE "${RANK_SIZE:-}" || return 1
  [[ "$server_index" =~ ^[0-9]+$ ]] || { echo "error: --server_index=$server_index must be 0, 1, ..." >&2; return 1; }
  plan="$("$PYTHON" "$ROOT/scripts/make_rank_table.py" --check="${RANK_TABLE_FILE:-}" --rank_size="$RANK_SIZE" \
          --server_index="$server_index")" || return 1
  RANK_IDS=() DEVICE_IDS=()
  while read -r rank device; do
    RANK_IDS+=("$rank")
    DEVICE_IDS+=("$device")
  done <<<"$plan"
  RANK_TABLE_FILE="$(cd "$(dirname "$RANK_TABLE_FILE")" && pwd)/$(basename "$RANK_TABLE_FILE")"
  export RANK_SIZE RANK_TABLE_FILE
}

ranks_cores() {
  local index="$1" count="$2" cpus
  cpus="$(nproc)"
  echo "$(( index * cpus / count ))-$(( (index + 1) * cpus / count - 1 ))"
}

_ranks_track() {  # _ranks_track NAME LOG: records the process just started in the background
  _RANK_PIDS+=("$!")
  _RANK_NAMES+=("$1")
  _RANK_LOGS+=("$2")
}

ranks_start_npu() {
  local rank="$1" device="$2" log="$3" cores="$4" binder=()
  shift 4
  [ -z "$cores" ] || binder=(taskset -c "$cores")
  RANK_ID="$rank" ASCEND_DEVICE_ID="$device" "${binder[@]}" "$@" >"$log" 2>&1 &
  _ranks_track "rank $rank (device $device)" "$log"
}

ranks_start_all_npu() {
  local bind_core="$1" log_of="$2" i cores
  shift 2
  for i in "${!RANK_IDS[@]}"; do
    cores=""
    [ "$bind_core" = False ] || cores="$(ranks_cores "$i" "${#RANK_IDS[@]}")"
    ranks_start_npu "${RANK_IDS[$i]}" "${DEVICE_IDS[$i]}" "$("$log_of" "${RANK_IDS[$i]}" "${DEVICE_IDS[$i]}")" \
      "$cores" "$@"
  done
}

ranks_check_horovod() {
  if ! "$PYTHON" -c 'import horovod.tensorflow' >/dev/null 2>&1; then
    echo "error: $RANK_SIZE processes on GPU/CPU run under Horovod, and horovod.tensorflow does not import in" \
         "$PYTHON: install it with bash scripts/install_horovod.sh (a 10-minute build the first time)" >&2
    return 1
  fi
}

ranks_start_horovod() {
  local prefix="$1"
  shift
  : >"${prefix}0.log"
  # Each process sends its output to its own file; horovodrun sets HOROVOD_RANK (Gloo) or the MPI rank.
  # shellcheck disable=SC2016
  env -u RANK_ID -u RANK_SIZE -u RANK_TABLE_FILE "$PYTHON" -m horovod.runner.launch -np "$RANK_SIZE" \
    -H "${HOROVOD_HOSTS:-localhost:$RANK_SIZE}" \
    bash -c 'exec "$@" >"$0${HOROVOD_RANK:-${OMPI_COMM_WORLD_RANK:-$PMI_RANK}}.log" 2>&1' "$prefix" "$@" &
  _ranks_track "horovodrun" "${prefix}0.log"
}

_ranks_stop() {
  local pid
  for pid in "${_RANK_PIDS[@]}"; do
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  done
}

ranks_wait() {
  local i pid code=0 running
  trap '_ranks_stop; wait; exit 130' INT
  trap '_ranks_stop; wait; exit 143' TERM
  while :; do
    running=0
    for i in "${!_RANK_PIDS[@]}"; do
      pid="${_RANK_PIDS[$i]}"
      [ -n "$pid" ] || continue
      if kill -0 "$pid" 2>/dev/null; then
        running=1
        continue
      fi
      code=0
      wait "$pid" || code=$?
      _RANK_PIDS[$i]=""
      if [ "$code" -ne 0 ]; then
        echo "[Error] ${_RANK_NAMES[$i]} failed with exit code $code; stopping the others. The end of" \
             "${_RANK_LOGS[$i]}:" >&2
        tail -n 15 "${_RANK_LOGS[$i]}" >&2
        _ranks_stop
        wait
        trap - INT TERM
        return "$code"
      fi
    done
    [ "$running" = 1 ] || break
    sleep 1
  done
  trap - INT TERM
  return 0
}
