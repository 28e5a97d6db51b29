# Sourced by the launchers and the test runner: puts a python3 with TensorFlow 1.15 in $PYTHON.
# Order: CANN's set_env.sh when present (Ascend docker images), a python3 that already imports
# tensorflow 1.15, else the project virtualenv .venv built with Python 3.7 from requirements.txt.
# Set EFFICIENTNET_FORCE_VENV=1 to skip the system python and always use .venv.

_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

for _cann_env in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/tfplugin/set_env.sh \
                 /usr/local/Ascend/nnae/set_env.sh; do
  # shellcheck disable=SC1090
  [ -f "$_cann_env" ] && source "$_cann_env"
done

_has_tf115() {
  "$1" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.__version__.startswith("1.15") else 1)' >/dev/null 2>&1
}

_find_python37() {
  for _candidate in python3.7 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.7*/bin/python3.7; do
    if [ -n "$_candidate" ] && "$_candidate" -c 'import sys; assert sys.version_info[:2] == (3, 7)' >/dev/null 2>&1; then
      echo "$_candidate"; return 0
    fi
  done
  return 1
}

PYTHON=""
if [ -z "${EFFICIENTNET_FORCE_VENV:-}" ]; then
  for _candidate in python3.7 python3; do
    if command -v "$_candidate" >/dev/null 2>&1 && _has_tf115 "$_candidate"; then PYTHON="$(command -v "$_candidate")"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  _venv="$_env_root/.venv"
  _requirements="$_env_root/requirements.txt"
  if ! _has_tf115 "$_venv/bin/python" || [ "$_requirements" -nt "$_venv/.installed" ]; then
    _py37="$(_find_python37)" || { echo "[env] error: Python 3.7 not found; install python3.7 (TensorFlow 1.15 needs it)" >&2; return 1; }
    echo "[env] creating $_venv with $_py37 from requirements.txt ..." >&2
    "$_py37" -m venv "$_venv" || { echo "[env] error: could not create $_venv" >&2; return 1; }
    "$_venv/bin/python" -m pip install -q --upgrade "pip<24" >&2 &&
      "$_venv/bin/python" -m pip install -q -r "$_requirements" >&2 ||
      { echo "[env] error: pip install -r $_requirements failed; check network access to PyPI" >&2; return 1; }
    touch "$_venv/.installed"
  fi
  PYTHON="$_venv/bin/python"
fi
export PYTHON
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
