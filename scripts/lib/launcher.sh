# shellcheck shell=bash
# Helpers of the launchers (train_1p.sh, train_8p.sh, test_1p.sh, scripts/modelzoo_test.sh). Needs
# $ROOT (the package folder) and, for resolve_train_args, $PYTHON (scripts/env.sh).

# real_dir DIR: DIR's absolute physical path; empty and false when DIR is not a folder.
real_dir() {
  (cd "$1" 2>/dev/null && pwd -P)
}

# fail MESSAGE...: one error line on stderr, then exit 1.
fail() {
  echo "[Error] $*" >&2
  exit 1
}

# bool_value ARG: True or False for a switch given as --name, --name=True|true|1 or --name=False|false|0;
# any other value fails naming the switch.
bool_value() {
  local name="${1%%=*}" value="True"
  case "$1" in *=*) value="${1#*=}" ;; esac
  case "$value" in
    True|true|1) echo True ;;
    False|false|0) echo False ;;
    *) fail "para \"${name#--}\" must be True or False, got \"$value\"" ;;
  esac
}

# made_dir DIR: creates DIR when missing and prints its absolute path.
made_dir() {
  mkdir -p "$1" && (cd "$1" && pwd)
}

# rank_option ARG: takes --server_index=K and --bind_core[=True|False] (sets server_index and bind_core,
# default 0 and False); returns 1 for any other argument.
server_index=0 bind_core=False
rank_option() {
  case "$1" in
    --server_index=*) server_index="${1#*=}" ;;
    --bind_core|--bind_core=*) bind_core="$(bool_value "$1")" || exit 1 ;;
    *) return 1 ;;
  esac
}

# run_teed LOG HEADER COMMAND...: prints HEADER, runs COMMAND, both to the terminal and to LOG; returns
# COMMAND's exit code.
run_teed() {
  local log="$1" header="$2" status=0
  shift 2
  mkdir -p "$(dirname "$log")"
  { echo "$header"; "$@"; } 2>&1 | tee "$log" || status=$?
  return "$status"
}

# package_module MODULE ARGS...: runs `python -m MODULE ARGS...` with this package importable.
package_module() {
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m "$@"
}

# resolve_train_args OPTIONS... -- USER_ARGS...: sets RECIPE (the recipe's name) and TRAIN_ARGS (train.py's
# arguments: the recipe's flags scaled to the devices, then USER_ARGS) with effnet/launch/train_args.py;
# a bad --recipe ends the launcher with its error line.
resolve_train_args() {
  local resolved
  resolved="$(package_module effnet.launch.train_args "$@")" || exit 1
  mapfile -t TRAIN_ARGS <<<"$resolved"
  RECIPE="${TRAIN_ARGS[0]}"
  TRAIN_ARGS=("${TRAIN_ARGS[@]:1}")
}
