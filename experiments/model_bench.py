"""Micro-benchmark of the torch executor: load time and batched-decode tokens/s.

``python experiments/model_bench.py --dtype bfloat16 --batch 1 32 --context 256 --steps 16 [--gemm native]
[--attention-backend torch|cpu] [--weight-blocks auto|off|N] [--no-prefill]``
prefills ``batch`` synthetic sequences of ``context`` tokens (block size 16, shuffled block ids),
then times ``steps`` decode steps of the whole batch and prints one JSON line per batch size.
Numbers are only meaningful on a quiet machine: on 2 shared cores another process halves them
(``loadavg_1m`` is printed; ``step_cpu_ms`` is the process CPU time per step, which load inflates
less than wall time when ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch

from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.torch_runner import TorchExecutor
from kvlab.models.config import resolve_model
from kvlab.request import SamplingParams

BLOCK = 16


def scattered_tables(ex: TorchExecutor, batch: int, tokens: int) -> list[list[int]]:
    """Size ``ex``'s cache for ``batch`` sequences of ``tokens`` tokens and return their block
    tables, block ids shuffled (seeded) as in a running server's pool."""
    per_seq = tokens // BLOCK + 1
    ids = list(range(per_seq * batch))
    random.Random(0).shuffle(ids)
    ex.init_cache(per_seq * batch, 0, BLOCK)
    return [ids[i * per_seq:(i + 1) * per_seq] for i in range(batch)]


def decode_tok_s(ex: TorchExecutor, batch: int, context: int, steps: int,
                 prefill: bool = True) -> dict[str, float]:
    """Prefill ``batch`` sequences, then time ``steps`` greedy decode steps of all of them.
    ``prefill=False`` skips the prefill (the cache holds zeros where the prompt's K/V would be:
    a decode step costs the same whatever the values), for a quick step time on a busy machine."""
    tables = scattered_tables(ex, batch, context + steps)
    sp = SamplingParams(temperature=0, max_tokens=steps + 1)
    prompt = [random.Random(i).randrange(1000, 20000) for i in range(context)]
    t = time.perf_counter()
    last: dict[int, int] = {}
    for i in range(0, batch if prefill else 0, 4):  # prefill 4 sequences per step
        step = StepInput([ScheduledSeq(j, str(j), prompt, 0, tables[j], 1, sp)
                          for j in range(i, min(i + 4, batch))])
        last.update({k: v[0].token_id for k, v in ex.execute(step).samples.items()})
    prefill_s = time.perf_counter() - t
    if not prefill:
        last = {j: prompt[-1] for j in range(batch)}
    t, c = time.perf_counter(), time.process_time()
    for s in range(steps):
        step = StepInput([ScheduledSeq(j, str(j), [last[j]], context + s, tables[j], 1, sp,
                                       sample_index=s + 1) for j in range(batch)])
        last = {k: v[0].token_id for k, v in ex.execute(step).samples.items()}
    dt, dc = time.perf_counter() - t, time.process_time() - c
    return {"batch": batch, "context": context,
            "prefill_tok_s": batch * context / prefill_s if prefill else float("nan"),
            "decode_tok_s": batch * steps / dt, "step_ms": 1e3 * dt / steps,
            "step_cpu_ms": 1e3 * dc / steps, "loadavg_1m": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gemm", default="auto", choices=["auto", "native", "upcast", "packed"],
                    help="matmul path (kvlab.models.linear)")
    ap.add_argument("--weight-blocks", default="auto",
                    help="auto|off|N: small-batch matmuls over the GGUF blocks (kvlab.models.block_linear)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--no-prefill", action="store_true", help="time decode steps over a zero-filled cache")
    ap.add_argument("--attention-backend", default="auto", help="auto|torch|cpu|triton")
    args = ap.parse_args()
    t = time.perf_counter()
    ex = TorchExecutor(resolve_model(args.model), device=args.device, dtype=args.dtype,
                       num_threads=args.threads, gemm=args.gemm, attention_backend=args.attention_backend,
                       weight_blocks=int(args.weight_blocks) if args.weight_blocks.isdigit() else args.weight_blocks)
    print(ex.precision.summary(), flush=True)
    load_s = time.perf_counter() - t
    for b in args.batch:
        row = decode_tok_s(ex, b, args.context, args.steps, prefill=not args.no_prefill)
        print(json.dumps({"model": args.model, "device": str(ex.device), "dtype": str(ex.dtype), "gemm": ex.gemm,
                          "attention": ex.attention_backend, "threads": torch.get_num_threads(),
                          "load_s": round(load_s, 2), **{k: round(v, 2) for k, v in row.items()}}))


if __name__ == "__main__":
    main()
