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

# recipe_yields_run_length ARGS...: drops --max_steps from the launcher's array `recipe` when the user's
# train.py flags ARGS give --epochs or --max_steps, so the run length they ask for wins (train.py takes
# --max_steps over --epochs).
recipe_yields_run_length() {
  local arg kept=()
  case " $* " in *" --epochs="*|*" --max_steps="*) ;; *) return 0 ;; esac
  for arg in "${recipe[@]}"; do [[ "$arg" == --max_steps=* ]] || kept+=("$arg"); done
  recipe=("${kept[@]}")
}

# install_test_requirements FILE: pip-installs FILE into $PYTHON's environment when it differs from the
# copy kept there after the last install (so a changed requirement is picked up, an unchanged one costs
# nothing).
install_test_requirements() {
  local stamp
  stamp="$("$PYTHON" -c 'import sys; print(sys.prefix)')/.test-requirements-installed"
  if ! cmp -s "$1" "$stamp"; then
    "$PYTHON" -m pip install -q -r "$1"
    cp "$1" "$stamp" 2>/dev/null || true
  fi
}

_has_tf() {  # _has_tf PYTHON VERSION_PREFIX
  "$1" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.__version__.startswith(sys.argv[1]) else 1)' "$2" \
    >/dev/null 2>&1
}

_find_python() {  # _find_python 3.7 | 3.11 3.10 3.12: the first interpreter of those versions
  local _version _candidate _pyenv_root
  _pyenv_root="$(command -v pyenv >/dev/null 2>&1 && pyenv root)"
  for _version in "$@"; do
    for _candidate in "python$_version" "${_pyenv_root:-/nonexistent}"/versions/"$_version"*/bin/python"$_version"; do
      if [ -n "$_candidate" ] && "$_candidate" -c \
          'import sys; assert "%d.%d" % sys.version_info[:2] == sys.argv[1]' "$_version" >/dev/null 2>&1; then
        echo "$_candidate"; return 0
      fi
    done
  done
  return 1
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

_venv_python() {  # _venv_python VENV REQUIREMENTS TF_PREFIX PYTHON_VERSIONS...: builds or updates VENV
  # .installed holds the requirements the venv was built from (an empty one, from older versions, is trusted).
  local _venv="$1" _requirements="$2" _prefix="$3" _python; shift 3
  if ! _has_tf "$_venv/bin/python" "$_prefix" ||
      { [ -s "$_venv/.installed" ] && ! cmp -s "$_requirements" "$_venv/.installed"; }; then
    if [ ! -x "$_venv/bin/python" ]; then
      _python="$(_find_python "$@")" || {
        echo "[env] error: no Python $* found; install one (TensorFlow $_prefix needs it) or set EFFICIENTNET_TF" >&2
        return 1; }
      echo "[env] creating $_venv with $_python ..." >&2
      "$_python" -m venv "$_venv" || { echo "[env] error: could not create $_venv" >&2; return 1; }
    fi
    echo "[env] installing $(basename "$_requirements") into $_venv ..." >&2
    "$_venv/bin/python" -m pip install -q --upgrade "pip<24" >&2 &&
      "$_venv/bin/python" -m pip install -q -r "$_requirements" >&2 ||
      { echo "[env] error: pip install -r $_requirements failed; check network access to PyPI" >&2; return 1; }
    cp "$_requirements" "$_venv/.installed"
  fi
  echo "$_venv/bin/python"
}

_tf_line="${EFFICIENTNET_TF:-auto}"
if [ "$_tf_line" = auto ]; then
  if _system_python 1.15 python3.7 python3 >/dev/null || _has_tf "$_env_root/.venv/bin/python" 1.15 ||
      _find_python 3.7 >/dev/null; then
    _tf_line=1
  else
    _tf_line=2
  fi
fi
case "$_tf_line" in
  1) PYTHON="$(_system_python 1.15 python3.7 python3 ||
               _venv_python "$_env_root/.venv" "$_env_root/requirements.txt" 1.15 3.7)" || return 1 ;;
  2) PYTHON="$(_system_python 2. python3 ||
               _venv_python "$_env_root/.venv-tf2" "$_env_root/requirements-tf2.txt" 2. 3.11 3.10 3.12)" || return 1 ;;
  *) echo "[env] error: EFFICIENTNET_TF=$_tf_line: use 1 (TensorFlow 1.15), 2 (TensorFlow 2.x) or auto" >&2
     return 1 ;;
esac
export PYTHON
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
