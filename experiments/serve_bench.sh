#!/usr/bin/env bash
# Continuous batching across clients: `kvlab.bench serve` at 16 concurrent clients against
# `kvlab.serve` (SmolLM2-135M on this CPU), then against the same server limited to one running
# request (scheduler.max_num_seqs=1). Writes $OUT/{batched,serial}/ and $OUT/summary.json.
# Workload: uniform prompts 16-128 / outputs 16-64 tokens (random ids, ignore_eos); LONG=1 uses
# the load generator's default instead (`uniform` 16-256 / 16-256, the distribution of
# experiments/bench_real_model.py). THREADS = torch threads of the server (default 2).
# Usage: [N=96] [THREADS=2] [LONG=1] [OUT=dir] experiments/serve_bench.sh [extra kvlab.serve overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8765}
if [[ "${LONG:-0}" == 1 ]]; then DEFAULT_OUT=results/serve_bench/long; else DEFAULT_OUT=results/serve_bench/short; fi
OUT=${OUT:-$DEFAULT_OUT}
N=${N:-96}
BENCH=(--num-requests "$N" --max-concurrency 16 --seed 0 --workload uniform)
if [[ "${LONG:-0}" != 1 ]]; then
  BENCH+=(--workload-opt prompt_len_max=128 --workload-opt output_len_max=64)
fi

run() {  # run <label> <serve overrides...>
  local label=$1; shift
  "$PY" -m kvlab.serve server.port="$PORT" "$@" > "$OUT/$label.server.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 240); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
  # warm-up (first steps pay one-off kernel setup), then the measured run
  "$PY" -m kvlab.bench serve --base-url "http://127.0.0.1:$PORT" --num-requests 4 --max-concurrency 4 \
    --workload fixed --workload-opt prompt_len=16 --workload-opt output_len=4 --result-dir "/tmp/serve_bench_warmup" > /dev/null
  "$PY" -m kvlab.bench serve --base-url "http://127.0.0.1:$PORT" "${BENCH[@]}" --label "$label" --result-dir "$OUT/$label"
  kill $pid; wait $pid 2>/dev/null || true
  trap - EXIT
}

mkdir -p "$OUT"
COMMON=(executor.num_threads=${THREADS:-2} "$@")
run batched "${COMMON[@]}"
run serial "${COMMON[@]}" scheduler.max_num_seqs=1
"$PY" - "$OUT" "${COMMON[@]}" <<'PYEOF'
import json, platform, os, sys, pathlib
out = pathlib.Path(sys.argv[1])
m = {k: json.loads((out / k / "metrics.json").read_text()) for k in ("batched", "serial")}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
cfg = json.loads((out / "batched" / "config.json").read_text())
summary = {"machine": f"{cpu}, {os.cpu_count()} cores", "load_average_at_end": os.getloadavg(),
           "server_overrides": sys.argv[2:], "bench_config": cfg,
           "batched_output_throughput": m["batched"]["output_throughput"],
           "serial_output_throughput": m["serial"]["output_throughput"],
           "ratio": m["batched"]["output_throughput"] / m["serial"]["output_throughput"]}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
