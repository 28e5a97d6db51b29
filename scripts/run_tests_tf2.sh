#!/usr/bin/env bash
# The test suite's TensorFlow 2.x part (called by scripts/run_tests.sh): builds .venv-tf2 from
# requirements-tf2.txt when missing (scripts/env.sh, EFFICIENTNET_TF=2), then runs the subset below.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests_tf2.sh -x`; --prepare-only stops after the
# environment is ready (scripts/run_tests.sh builds it before the TensorFlow 1.15 suite).
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export EFFICIENTNET_TF=2 EFFICIENTNET_FORCE_VENV="${EFFICIENTNET_FORCE_VENV:-1}"
# shellcheck disable=SC1091
source scripts/env.sh
install_test_requirements requirements-test-tf2.txt
[ "${1:-}" != --prepare-only ] || exit 0
echo "[run_tests_tf2] $("$PYTHON" -c 'import sys, tensorflow as tf; print("Python %d.%d, TensorFlow %s" % (sys.version_info[:2] + (tf.__version__,)))' 2>/dev/null)"
# TF2_SUBSET: what differs between the versions (model numerics, checkpoints, device options, every
# entry point once); the rest of the suite exercises the same code paths and stays on TF 1.15.
TF2_SUBSET=(
  tests/test_tf_versions.py
  tests/test_model.py
  tests/test_device.py
  tests/test_train_step.py
)
# B4-B7 graphs add nothing version-specific to the B0-B3 ones and took 15 of the subset's 30 minutes
# (sequential, loaded machine): their structure and training step stay on TF 1.15.
TF2_DESELECT="not ((model_table or one_training_step) and (b4 or b5 or b6 or b7))"
exec "$PYTHON" -m pytest -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile --durations=10 \
  -k "$TF2_DESELECT" "${TF2_SUBSET[@]}" "$@"
