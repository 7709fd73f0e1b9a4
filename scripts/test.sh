#!/usr/bin/env bash
# The test command behind `make test` (and so .ci/run): lint, then the test suite.
# pytest exits 5 when it collects no test: that is a failure here, like any non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
