#!/usr/bin/env bash
# The project's one test command: creates the Python 3.7 environment when missing, then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k model -x`.
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export EFFICIENTNET_FORCE_VENV="${EFFICIENTNET_FORCE_VENV:-1}"
# shellcheck disable=SC1091
source scripts/env.sh
if ! "$PYTHON" -c 'import pytest, sklearn' >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q -r requirements-test.txt
fi
exec "$PYTHON" -m pytest "$@"
