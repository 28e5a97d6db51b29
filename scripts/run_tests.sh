#!/usr/bin/env bash
# The project's one test command: creates the Python 3.7 environment when missing, installs the
# test requirements when they changed, then runs pytest on both CPU cores and lists the slowest
# tests at the end, so that a test that got slower is seen.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k model -x` (add `-n 0` to run in
# one process, e.g. with --pdb).
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export EFFICIENTNET_FORCE_VENV="${EFFICIENTNET_FORCE_VENV:-1}"
# shellcheck disable=SC1091
source scripts/env.sh
test_stamp="$("$PYTHON" -c 'import sys; print(sys.prefix)')/.test-requirements-installed"
if [ ! -f "$test_stamp" ] || [ requirements-test.txt -nt "$test_stamp" ]; then
  "$PYTHON" -m pip install -q -r requirements-test.txt
  touch "$test_stamp" 2>/dev/null || true
fi
start=$(date +%s)
status=0
"$PYTHON" -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@" || status=$?
echo "[run_tests] pytest finished in $(( $(date +%s) - start )) s with exit code $status"
exit "$status"
