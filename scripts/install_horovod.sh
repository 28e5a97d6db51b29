#!/usr/bin/env bash
# Installs Horovod (requirements-horovod.txt) into the project's Python for multi-process training on
# GPU/CPU. Quick when `import horovod.tensorflow` already works; otherwise pip builds it from source
# against the installed TensorFlow 1.15 (cmake and a C++ compiler needed; about 10 minutes on 2 cores,
# once per machine: pip caches the wheel). Gloo is built in, so horovodrun needs no MPI; NCCL is used on
# GPUs when CUDA is found (HOROVOD_GPU_OPERATIONS=NCCL forces it).
#
#   bash scripts/install_horovod.sh            # the python of scripts/env.sh (.venv or the docker's)
#   PYTHON=/path/to/python bash scripts/install_horovod.sh
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  # shellcheck disable=SC1091
  source "$ROOT/scripts/env.sh"
fi
if "$PYTHON" -c 'import horovod.tensorflow' >/dev/null 2>&1; then
  echo "[install_horovod] horovod.tensorflow already imports in $PYTHON"
  exit 0
fi
for tool in cmake g++; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "[install_horovod] error: $tool not found: install it (e.g. apt-get install cmake g++) and run again" >&2; exit 1; }
done
echo "[install_horovod] building Horovod for $PYTHON (first time: about 10 minutes) ..."
# --no-build-isolation: build against this environment's TensorFlow, not a fresh one.
HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  "$PYTHON" -m pip install --no-build-isolation -r "$ROOT/requirements-horovod.txt"
"$PYTHON" -c 'import horovod, horovod.tensorflow; print("[install_horovod] horovod", horovod.__version__, "imports")'
