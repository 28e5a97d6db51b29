#!/usr/bin/env bash
# Creates .venv-sources (Python 3.11) with the frameworks whose weights convert_weights.py reads
# (torch, efficientnet_pytorch, timm, TensorFlow 2 / Keras, the efficientnet Keras package), for the
# logit-agreement tests. Prints the venv's python on success.
# It lives in the user's cache folder, not in the clone, so that every clone and CI run on a machine
# shares one build (a few minutes); it is rebuilt when tests/sources/requirements.txt changes.
# Set EFFICIENTNET_SOURCES_VENV to put it elsewhere.
set -eo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EFFICIENTNET_SOURCES_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/efficientnet-tf/venv-sources}"
requirements="$root/tests/sources/requirements.txt"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$wanted" ]; then
  echo "$venv/bin/python"; exit 0
fi
python311=""
for candidate in python3.11 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.11*/bin/python3.11 \
                 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11; do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
    python311="$candidate"; break
  fi
done
if [ -z "$python311" ]; then
  echo "error: Python 3.11 not found: install python3.11 (e.g. pyenv install 3.11) to build $venv" >&2; exit 1
fi
echo "[sources] creating $venv with $python311 from $requirements (a few minutes, about 2.5 GB) ..." >&2
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "error: $venv exists and is not a virtualenv: set EFFICIENTNET_SOURCES_VENV to a new folder" >&2; exit 1
fi
mkdir -p "$(dirname "$venv")"
"$python311" -m venv --clear "$venv" >&2  # an outdated or half-built test venv is rebuilt from scratch
"$venv/bin/python" -m pip install -q -r "$requirements" >&2 ||
  { echo "error: pip install -r $requirements into $venv failed; check access to PyPI" >&2; exit 1; }
echo "$wanted" > "$venv/.installed"
echo "$venv/bin/python"
