#!/usr/bin/env bash
# The test command behind `make test` (and so .ci/run): lint, then the test suite.
# pytest exits 5 when it collects no test: that is a failure here, like any non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ruff check .
# Tests run in parallel worker processes (pytest-xdist), one per core up to 4: most tests are
# Python-bound small-model runs, so two workers on the 2-core CI machine roughly halve its time;
# more than 4 would only multiply the memory of the models each worker loads.
# KVLAB_TEST_WORKERS=0 runs everything in one process (easier to debug). --dist loadfile keeps each
# test file on one worker, so a module-scoped fixture (a server, a model run, the quant --quick
# subprocess) is built once, not once per worker that draws one of its tests (per-test distribution
# built six of them twice: ~1.5 CPU-minutes); tests/server/test_fuzz.py also relies on it (it checks
# the server its own earlier tests fuzzed).
workers=${KVLAB_TEST_WORKERS:-$(python3 -c "import os; print(min(4, len(os.sched_getaffinity(0))))")}
.venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile --durations=15 "$@"
