#!/usr/bin/env bash
# The project's one test command: creates the Python 3.7 environment when missing, then runs pytest;
# with no arguments it then runs the TensorFlow 2.x subset too (scripts/run_tests_tf2.sh).
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k model -x`.
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export EFFICIENTNET_FORCE_VENV="${EFFICIENTNET_FORCE_VENV:-1}"
# shellcheck disable=SC1091
source scripts/env.sh
if ! "$PYTHON" -c 'import pytest, sklearn' >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q -r requirements-test.txt
fi
status=0
"$PYTHON" -m pytest "$@" || status=$?
# Then the TensorFlow 2.x subset (scripts/run_tests_tf2.sh), unless arguments select tests or
# EFFICIENTNET_TF2_TESTS=0.
if [ $# -eq 0 ] && [ "${EFFICIENTNET_TF2_TESTS:-1}" != 0 ]; then
  bash scripts/run_tests_tf2.sh || status=$?
fi
exit "$status"
