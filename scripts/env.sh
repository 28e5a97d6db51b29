# Sourced by the launchers and the test runner: puts a python3 with TensorFlow in $PYTHON.
#
# EFFICIENTNET_TF chooses the TensorFlow line:
#   1     TensorFlow 1.15 (Python 3.7): CANN's set_env.sh when present (Ascend docker images), a python3
#         that already imports tensorflow 1.15, else the virtualenv .venv built from requirements.txt.
#   2     TensorFlow 2.x (Python 3.10-3.12, current GPUs): a python3 that already imports tensorflow 2.x,
#         else the virtualenv .venv-tf2 built from requirements-tf2.txt.
#   auto  (default) 1 when a python with TensorFlow 1.15, the .venv or a Python 3.7 exists, else 2.
# EFFICIENTNET_FORCE_VENV=1 skips the system python and always uses the virtualenv.

_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

for _cann_env in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/tfplugin/set_env.sh \
                 /usr/local/Ascend/nnae/set_env.sh; do
  # shellcheck disable=SC1090
  [ -f "$_cann_env" ] && source "$_cann_env"
done

# shellcheck disable=SC1091
source "$_env_root/scripts/lib/python_env.sh"

# install_test_requirements FILE: pip-installs FILE into $PYTHON's environment when it changed since the
# last install (an unchanged one costs nothing).
install_test_requirements() {
  pip_install_requirements "$PYTHON" "$1" "$("$PYTHON" -c 'import sys; print(sys.prefix)')/.test-requirements-installed"
}

_has_tf() {  # _has_tf PYTHON VERSION_PREFIX
  "$1" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.__version__.startswith(sys.argv[1]) else 1)' "$2" \
    >/dev/null 2>&1
}

_system_python() {  # _system_python VERSION_PREFIX CANDIDATES...: a python on PATH with that TensorFlow
  local _prefix="$1" _candidate; shift
  [ -n "${EFFICIENTNET_FORCE_VENV:-}" ] && return 1
  for _candidate in "$@"; do
    if command -v "$_candidate" >/dev/null 2>&1 && _has_tf "$(command -v "$_candidate")" "$_prefix"; then
      command -v "$_candidate"; return 0
    fi
  done
  return 1
}

_tf_venv_python() {  # _tf_venv_python VENV REQUIREMENTS TF_PREFIX PYTHON_VERSIONS...: a venv whose TF imports
  local _venv="$1" _requirements="$2" _prefix="$3"; shift 3
  # A venv whose TensorFlow no longer imports is installed again.
  _has_tf "$_venv/bin/python" "$_prefix" || rm -f "$_venv/.installed"
  venv_python "$_venv" "$_requirements" "$@"
}

_tf_line="${EFFICIENTNET_TF:-auto}"
if [ "$_tf_line" = auto ]; then
  if _system_python 1.15 python3.7 python3 >/dev/null || _has_tf "$_env_root/.venv/bin/python" 1.15 ||
      find_python 3.7 >/dev/null; then
    _tf_line=1
  else
    _tf_line=2
  fi
fi
case "$_tf_line" in
  1) PYTHON="$(_system_python 1.15 python3.7 python3 ||
               _tf_venv_python "$_env_root/.venv" "$_env_root/requirements.txt" 1.15 3.7)" || return 1 ;;
  2) PYTHON="$(_system_python 2. python3 ||
               _tf_venv_python "$_env_root/.venv-tf2" "$_env_root/requirements-tf2.txt" 2. 3.11 3.10 3.12)" || return 1 ;;
  *) echo "[env] error: EFFICIENTNET_TF=$_tf_line: use 1 (TensorFlow 1.15), 2 (TensorFlow 2.x) or auto" >&2
     return 1 ;;
esac
export PYTHON
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
