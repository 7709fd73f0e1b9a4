#!/usr/bin/env bash
# The one prepared GPU check (for a session that is lent a GPU; device time is ~10 minutes):
#   1. the kernel `gpu` tests (tests/kernels, real sizes, bf16/fp16/fp32, block sizes 1..128);
#   2. the kernel benchmark (experiments/bench_kernels.py; --quick by default);
#   3. the small interpreter-sized kernel comparisons, compiled on CUDA this time;
#   4. every other `gpu`-marked test of the repo.
# Each step has its own timeout; a failing or timed-out step does not stop the next one.
# Output (at most 6 files: the device tool returns at most 8, two folders deep):
#   $RESULTS/gpu_check/log.txt       environment + the output of every step
#   $RESULTS/gpu_check/summary.json  exit status and seconds of every step
#   $RESULTS/kernels/<device>/       decode_bandwidth.{json,png}, fig18a.{json,png}
# Usage: with the device tool: `RESULTS=$OUT bash experiments/gpu_check.sh`, then copy the returned
# files under results/ and commit them (`git add -f`: results/ is ignored); on any GPU box: `bash experiments/gpu_check.sh` (RESULTS=results).
# Knobs: PY, T_KERNEL_TESTS (150 s), T_BENCH (240 s), T_SMALL_TESTS (90 s), T_OTHER_TESTS (90 s),
# BENCH_ARGS (--quick). The default timeouts add up to 570 s, inside one 600 s device call.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
RESULTS=${RESULTS:-results}
LOGDIR=$RESULTS/gpu_check
mkdir -p "$LOGDIR"
LOG=$LOGDIR/log.txt
: > "$LOG"
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [[ -z "${PY:-}" ]]; then
  PY=python3
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY=.venv/bin/python
  fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >> "$LOG" 2>&1; then
  log "no CUDA device visible to $PY: nothing to check (the CPU suite covers the interpreter)"
  exit 2
fi
# The lent machines are offline and kvlab is not installed there: import it from the checkout.
if ! "$PY" -c "import kvlab.kernels.decode_attention" 2>/dev/null; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  log "kvlab imported from the checkout ($PWD on PYTHONPATH)"
fi

{
  echo "== environment"; date -u; git rev-parse HEAD 2>/dev/null || echo "(no git)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>&1
  "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1
} >> "$LOG"
SLUG=$("$PY" -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")

# Parallel test processes where pytest-xdist exists (the GPU image has it): compiles dominate.
XDIST=()
if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${XDIST_WORKERS:-4}"); fi

declare -A RC SECS
step() {  # step <name> <timeout_s> <command...>
  local name=$1 limit=$2; shift 2
  log "== $name (timeout ${limit}s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  RC[$name]=${PIPESTATUS[0]}
  SECS[$name]=$((SECONDS - t0))
  log "== $name: exit ${RC[$name]} after ${SECS[$name]} s"
}

step kernel_tests "${T_KERNEL_TESTS:-150}" "$PY" -m pytest ${XDIST[@]+"${XDIST[@]}"} -m gpu tests/kernels -q -rfEs -p no:cacheprovider
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
step bench "${T_BENCH:-240}" "$PY" experiments/bench_kernels.py ${BENCH_ARGS:---quick} --out "$RESULTS/kernels/$SLUG"
step small_kernel_tests "${T_SMALL_TESTS:-90}" "$PY" -m pytest ${XDIST[@]+"${XDIST[@]}"} -m "not gpu and not slow" tests/kernels -q -rfEs -p no:cacheprovider
step other_gpu_tests "${T_OTHER_TESTS:-90}" "$PY" -m pytest -m gpu tests --ignore=tests/kernels -q -rfEs -p no:cacheprovider

{
  echo "{"
  echo "  \"device\": \"$SLUG\","
  for name in kernel_tests bench small_kernel_tests other_gpu_tests; do
    echo "  \"$name\": {\"exit\": ${RC[$name]}, \"seconds\": ${SECS[$name]}},"
  done
  echo "  \"note\": \"exit 124/137 = timed out; 5 from pytest = no tests collected\""
  echo "}"
} > "$LOGDIR/summary.json"
log "summary: $(tr -d '\n' < "$LOGDIR/summary.json")"
[[ ${RC[kernel_tests]} == 0 && ${RC[bench]} == 0 ]]
