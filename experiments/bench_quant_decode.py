"""CPU decode step per KV format vs the unquantized cache (issue 12's target: quantized <= 1.3x).

``python experiments/bench_quant_decode.py [--batch 8] [--context 512] [--steps 8] [--rounds 3]
[--threads 1] [--schemes none int8 ...] [--checkpoint random|auto]`` builds ONE torch executor
(SmolLM2-135M's shape; random weights by default: the step's cost does not depend on the values),
then for each round and each scheme (interleaved, so machine load hits every scheme alike)
re-allocates the cache in that format, prefills ``batch`` sequences of ``context`` tokens and times
``steps`` decode steps of the whole batch. Prints one JSON line per scheme: median step in ms over
the rounds, ratio to ``none``, the CPU and the load average (``os.getloadavg``) before and after:
a figure measured while other processes load the machine must say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

from model_bench import scattered_tables  # experiments/ is on sys.path when run as a script

from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.torch_runner import TorchExecutor
from kvlab.kv_quant_format import SCHEMES, KVQuantConfig
from kvlab.models.config import resolve_model
from kvlab.request import SamplingParams


def step_ms(ex: TorchExecutor, scheme: str, batch: int, context: int, steps: int) -> float:
    """Prefill ``batch`` sequences in format ``scheme``, then the mean decode step in ms."""
    ex.kv_quant = KVQuantConfig.parse(scheme)
    tables = scattered_tables(ex, batch, context + steps)
    sp = SamplingParams(temperature=0, max_tokens=steps + 1)
    last: dict[int, int] = {}
    for i in range(0, batch, 4):
        prompt = [random.Random(i).randrange(1000, 20000) for _ in range(context)]
        step = StepInput([ScheduledSeq(j, str(j), prompt, 0, tables[j], 1, sp) for j in range(i, min(i + 4, batch))])
        last.update({k: v[0].token_id for k, v in ex.execute(step).samples.items()})
    t = time.perf_counter()
    for s in range(steps):
        step = StepInput([ScheduledSeq(j, str(j), [last[j]], context + s, tables[j], 1, sp, sample_index=s + 1)
                          for j in range(batch)])
        last = {k: v[0].token_id for k, v in ex.execute(step).samples.items()}
    return 1e3 * (time.perf_counter() - t) / steps


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--checkpoint", default="random", help="random (default) or auto (the real weights)")
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    a = ap.parse_args()
    model = resolve_model("smollm2-135m") | {"max_model_len": 4096}
    if a.checkpoint == "random":
        model |= {"checkpoint": "random"}
    ex = TorchExecutor(model, device="cpu", dtype=a.dtype, num_threads=a.threads, attention_backend="torch")
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {s: [] for s in a.schemes}
    step_ms(ex, a.schemes[0], a.batch, min(a.context, 64), 2)  # warm-up
    for _ in range(a.rounds):
        for s in a.schemes:
            times[s].append(step_ms(ex, s, a.batch, a.context, a.steps))
    load_after = os.getloadavg()
    base = statistics.median(times["none"]) if "none" in times else None
    for s in a.schemes:
        med = statistics.median(times[s])
        print(json.dumps({"scheme": s, "batch": a.batch, "context": a.context, "dtype": a.dtype,
                          "threads": a.threads, "step_ms": round(med, 2),
                          "ratio_to_none": round(med / base, 3) if base else None,
                          "all_ms": [round(x, 2) for x in times[s]], "cpu": cpu_name(),
                          "loadavg_before": load_before, "loadavg_after": load_after}), flush=True)


if __name__ == "__main__":
    main()
