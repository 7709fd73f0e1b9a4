"""Real-model throughput: kvlab's continuous batching vs transformers ``generate``.

The same 64 requests (prompt and output lengths uniform in 16–256, seeded; EOS ignored, so every
request produces exactly its output length) run through:

- ``hf-serial``: transformers ``generate`` one request at a time (no padding);
- ``hf-static-B``: transformers ``generate`` on padded static batches of B requests, in arrival
  order (left padding; a batch decodes until its longest output, so shorter requests waste work);
- ``kvlab``: kvlab's engine (paged allocator, FCFS continuous batching), all requests at t=0.

Useful output throughput = tokens the requests asked for / wall time. Each mode is run at the same
dtype (``--dtype float32`` and ``bfloat16``). ``--subset K`` times the serial baseline on the first K
requests only (it is slow: ~15 tok/s) and reports its tokens/s. Writes results/bench/real_model.json.

    python experiments/bench_real_model.py --dtype float32 bfloat16 --static 16 32 64 --subset 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def make_requests(n: int, seed: int, vocab: int) -> list[tuple[list[int], int]]:
    rng = np.random.default_rng(seed)
    plen = rng.integers(16, 257, n)
    olen = rng.integers(16, 257, n)
    return [(rng.integers(100, vocab, p).tolist(), int(o)) for p, o in zip(plen, olen)]


def hf_generate(model, batch: list[tuple[list[int], int]], pad_id: int) -> None:
    width = max(len(p) for p, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, _) in enumerate(batch):  # left padding
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    new = max(o for _, o in batch)
    with torch.inference_mode():
        model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       pad_token_id=pad_id)


def bench_hf(model_dir: Path, dtype: torch.dtype, reqs, subset: int, static: list[int], pad_id: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True).eval()
    out = {}
    hf_generate(model, reqs[:1], pad_id)  # warm-up
    t = time.perf_counter()
    for r in reqs[:subset]:
        hf_generate(model, [r], pad_id)
    out["hf-serial"] = sum(o for _, o in reqs[:subset]) / (time.perf_counter() - t)
    useful = sum(o for _, o in reqs)
    for b in static:
        t = time.perf_counter()
        for i in range(0, len(reqs), b):
            hf_generate(model, reqs[i:i + b], pad_id)
        out[f"hf-static-{b}"] = useful / (time.perf_counter() - t)
    return out


def bench_kvlab(dtype: str, reqs, threads: int, gemm: str) -> tuple[float, str]:
    """kvlab's useful output tokens/s and the matmul path it took (see kvlab.models.linear)."""
    from kvlab import LLM, SamplingParams

    llm = LLM("smollm2-135m", "paged", dtype=dtype,
              overrides=[f"executor.num_threads={threads}", f"executor.gemm={gemm}"])
    llm.generate([reqs[0][0]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    t = time.perf_counter()
    for p, o in reqs:
        llm.engine.add_request(p, SamplingParams(max_tokens=o, ignore_eos=True, temperature=0.0))
    while llm.engine.has_unfinished_requests():
        llm.engine.step()
    return sum(o for _, o in reqs) / (time.perf_counter() - t), llm.engine.executor.gemm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--static", nargs="*", type=int, default=[16, 32, 64])
    ap.add_argument("--subset", type=int, default=8, help="requests timed for the serial baseline")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--gemm", default="auto", choices=["auto", "native", "upcast"],
                    help="kvlab's 16-bit matmul path (executor.gemm); transformers always runs torch's own")
    ap.add_argument("--out", default="results/bench/real_model.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kvlab.models.config import resolve_model
    from kvlab.models.loader import checkpoint_dir

    cfg = resolve_model("smollm2-135m")
    model_dir = checkpoint_dir(cfg)
    reqs = make_requests(args.requests, 0, int(cfg["vocab_size"]))
    results: dict = {"requests": args.requests, "useful_output_tokens": sum(o for _, o in reqs),
                     "threads": args.threads,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                                f"load avg at start {os.getloadavg()[0]:.1f}"}
    for dt in args.dtype:
        tok_s, gemm = bench_kvlab(dt, reqs, args.threads, args.gemm)
        row = {"kvlab": tok_s}
        print(dt, "kvlab", round(tok_s, 1), "tok/s, gemm path", gemm, flush=True)
        row.update(bench_hf(model_dir, getattr(torch, dt), reqs, args.subset, args.static, 0))
        best_static = max((v for k, v in row.items() if k.startswith("hf-static")), default=float("nan"))
        row["ratio_vs_serial"] = row["kvlab"] / row["hf-serial"]
        row["ratio_vs_best_static"] = row["kvlab"] / best_static
        results[dt] = {"kvlab_gemm": gemm, **{k: round(v, 2) for k, v in row.items()}}
        print(dt, json.dumps(results[dt]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
