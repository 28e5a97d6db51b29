# shellcheck shell=bash
# Finding a Python interpreter and keeping virtualenvs in step with their requirements files; sourced
# by scripts/env.sh and scripts/make_sources_venv.sh. One stamp scheme everywhere: an environment
# records the sha256 of the requirements file it was installed from (VENV/.installed for a venv,
# <prefix>/.test-requirements-installed for test packages); a different file means pip install again.

requirements_hash() {
  sha256sum "$1" | cut -d' ' -f1
}

# stamp_is_current FILE STAMP: STAMP records FILE's hash (stamps of older versions held a copy of FILE).
stamp_is_current() {
  [ -f "$2" ] && { [ "$(cat "$2")" = "$(requirements_hash "$1")" ] || cmp -s "$1" "$2"; }
}

# pip_install_requirements PYTHON FILE STAMP: pip install -r FILE into PYTHON's environment unless
# STAMP is current, then records FILE in STAMP.
pip_install_requirements() {
  stamp_is_current "$2" "$3" && return 0
  echo "[env] installing $(basename "$2") for $1 ..." >&2
  "$1" -m pip install -q -r "$2" >&2 ||
    { echo "[env] error: pip install -r $2 failed; check network access to PyPI" >&2; return 1; }
  requirements_hash "$2" >"$3"
}

# find_python VERSION...: the first interpreter of those versions: python3.X on PATH, else pyenv's
# (`pyenv root`), else one under $PYENV_ROOT (default ~/.pyenv) when pyenv is not on PATH.
find_python() {
  local version candidate pyenv_root
  pyenv_root="$(command -v pyenv >/dev/null 2>&1 && pyenv root)"
  for version in "$@"; do
    for candidate in "python$version" "${pyenv_root:-/nonexistent}"/versions/"$version"*/bin/python"$version" \
                     "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/python"$version"; do
      if "$candidate" -c 'import sys; assert "%d.%d" % sys.version_info[:2] == sys.argv[1]' "$version" \
          >/dev/null 2>&1; then
        echo "$candidate"
        return 0
      fi
    done
  done
  return 1
}

# venv_python VENV REQUIREMENTS VERSION...: prints VENV's python after creating VENV (with the first
# Python of VERSIONs) when missing and installing REQUIREMENTS when they changed.
venv_python() {
  local venv="$1" requirements="$2" python
  shift 2
  if [ ! -x "$venv/bin/python" ]; then
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
      echo "[env] error: $venv exists and is not a virtualenv: move it away or choose another folder" >&2
      return 1
    fi
    python="$(find_python "$@")" ||
      { echo "[env] error: no Python $* found: install one (e.g. pyenv install $1) to build $venv" >&2; return 1; }
    echo "[env] creating $venv with $python ..." >&2
    mkdir -p "$(dirname "$venv")"
    { "$python" -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade "pip<24"; } >&2 ||
      { echo "[env] error: could not create $venv" >&2; return 1; }
  fi
  pip_install_requirements "$venv/bin/python" "$requirements" "$venv/.installed" || return 1
  echo "$venv/bin/python"
}
