#!/usr/bin/env bash
# The project's one test command: creates the Python 3.7 environment when missing, installs the
# test requirements when they changed, runs pytest on both CPU cores and lists the slowest tests at
# the end (so that a test that got slower is seen); with no arguments it then runs the TensorFlow
# 2.x subset too (scripts/run_tests_tf2.sh; EFFICIENTNET_TF2_TESTS=0 skips it), whose environment
# it builds first, because the 1.15 suite's cross-version tests run its python as well.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k model -x` (add `-n 0` to run in
# one process, e.g. with --pdb).
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export EFFICIENTNET_FORCE_VENV="${EFFICIENTNET_FORCE_VENV:-1}"
# shellcheck disable=SC1091
source scripts/env.sh
install_test_requirements requirements-test.txt
# The multi-process tests need Horovod (seconds when it imports; a one-time build otherwise).
bash scripts/install_horovod.sh
tf2=0
if [ $# -eq 0 ] && [ "${EFFICIENTNET_TF2_TESTS:-1}" != 0 ]; then
  tf2=1 tf2_status=0
  bash scripts/run_tests_tf2.sh --prepare-only || tf2_status=$?
fi
status=0
# Lint first (ruff.toml): a failure counts like a failed test but does not stop the suite.
"$PYTHON" -m ruff check . || { status=$?; echo "[run_tests] ruff check failed: run \`$PYTHON -m ruff check .\`"; }
start=$(date +%s)
"$PYTHON" -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@" || status=$?
echo "[run_tests] TensorFlow 1.15 suite: $(( $(date +%s) - start )) s, exit code $status"
if [ "$tf2" = 1 ]; then
  start=$(date +%s)
  if [ "$tf2_status" -eq 0 ]; then
    bash scripts/run_tests_tf2.sh || tf2_status=$?
  else
    echo "[run_tests] the TensorFlow 2.x environment was not built (see [env] above): subset not run"
  fi
  echo "[run_tests] TensorFlow 2.x subset: $(( $(date +%s) - start )) s, exit code $tf2_status"
  [ "$status" -ne 0 ] || status=$tf2_status
fi
exit "$status"
