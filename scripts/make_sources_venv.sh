#!/usr/bin/env bash
# Creates .venv-sources (Python 3.11) with the frameworks whose weights convert_weights.py reads
# (torch, efficientnet_pytorch, timm, TensorFlow 2 / Keras, the efficientnet Keras package), for the
# logit-agreement tests. Prints the venv's python on success.
# It lives in the user's cache folder, not in the clone, so that every clone and CI run on a machine
# shares one build (a few minutes, about 2.5 GB); packages are installed again when
# tests/sources/requirements.txt changes. Set EFFICIENTNET_SOURCES_VENV to put it elsewhere.
set -eo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/scripts/lib/python_env.sh"
venv_python "${EFFICIENTNET_SOURCES_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/efficientnet-tf/venv-sources}" \
  "$root/tests/sources/requirements.txt" 3.11
