"""The serving effect of a KV format at one fixed KV memory budget, through kvlab.experiment.

Both runs are ordinary experiments (:func:`kvlab.experiment.run_experiment`, so each writes its
own ``metrics.json`` / ``requests.csv`` / ``steps.csv`` / ``config.yaml`` / ``manifest.json``):

* **cpu**: the real model (SmolLM2, fp32 on this CPU) with ``kv.kv_cache_gib`` fixed to the bytes
  of ``budget_tokens`` tokens of the UNQUANTIZED cache, so every scheme gets the same bytes and a
  smaller format holds more tokens; synthetic uniform lengths, every request at t=0 (offline
  throughput, like vLLM's fp8 figure), output lengths forced.
* **sim**: the simulator at paper scale (OPT-13B on one A100-40GB by default, fp16 KV), where the
  budget is the GPU's memory after weights, as in the vLLM paper; ShareGPT-like lengths, all at t=0.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

GiB = 1 << 30


@contextmanager
def shared_weights() -> Any:
    """Load each checkpoint's weights once for all the schemes' executors (read-only tensors).

    The torch executor loads weights in its constructor; a comparison builds one executor per
    scheme, so this memoizes :func:`kvlab.models.loader.load_model` for the block's duration
    (restored afterwards). Loading costs seconds to tens of seconds on a busy 2-core machine."""
    import kvlab.executor.torch_runner as tr

    original = tr.load_model
    cache: dict[tuple, Any] = {}

    def load(model_cfg: Any, device: Any, dtype: Any, seed: int = 0) -> Any:
        key = (repr(sorted(dict(model_cfg).items())), str(device), str(dtype), seed)
        if key not in cache:
            cache[key] = original(model_cfg, device, dtype, seed)
        return cache[key]

    tr.load_model = load
    try:
        yield cache
    finally:
        tr.load_model = original


def serving_row(result: dict[str, Any], prefix: str) -> dict[str, float]:
    """The summary columns of one serving run (``prefix`` = ``""`` for the CPU run, ``sim_``)."""
    engine, m = result["engine"], result["metrics"]
    steps = list(engine.step_records)
    decode = [s.duration_s for s in steps if s.num_prefill_tokens == 0 and s.num_decode_tokens > 0]
    row = {
        "bytes_per_token": engine.block_bytes / engine.block_size,
        "capacity_tokens": float(engine.kv_capacity_tokens),
        "max_batch": float(max((s.num_running for s in steps), default=0)),
        "mean_batch": m["mean_batched_requests"],
        "num_preemptions": m["num_preemptions"],
        "output_throughput": m["output_throughput"],
        "median_ttft_ms": m["median_ttft_ms"],
        "p99_ttft_ms": m["p99_ttft_ms"],
        "median_tpot_ms": m["median_tpot_ms"],
        "p99_tpot_ms": m["p99_tpot_ms"],
        "p99_e2el_ms": m["p99_e2el_ms"],
        "decode_step_ms": float(np.median(decode) * 1e3) if decode else float("nan"),
        "duration_s": m["duration_s"],
    }
    return {f"{prefix}{k}": float(v) for k, v in row.items()}


def cpu_overrides(budget_bytes: int, num_requests: int, prompt_len: Sequence[int], output_len: Sequence[int],
                  threads: int) -> list[str]:
    """Overrides of the real-model serving run (see the module docstring)."""
    return ["executor=torch", "workload=uniform", "workload.rate=null", f"workload.num_requests={num_requests}",
            f"workload.prompt_len_min={prompt_len[0]}", f"workload.prompt_len_max={prompt_len[1]}",
            f"workload.output_len_min={output_len[0]}", f"workload.output_len_max={output_len[1]}",
            f"++kv.kv_cache_gib={budget_bytes / GiB!r}", "kv.swap_space_gib=0", "dtype=float32", "device=cpu",
            f"executor.num_threads={threads}", "show_progress=false"]


def sim_overrides(model: str, hardware: str, num_requests: int) -> list[str]:
    """Overrides of the paper-scale simulator run (see the module docstring)."""
    return ["executor=sim", f"model={model}", f"hardware={hardware}", "workload=sharegpt", "workload.rate=null",
            f"workload.num_requests={num_requests}", "show_progress=false"]


def run_serving(cfg: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, float]:
    """Run one serving experiment into ``out_dir``; its summary columns."""
    from kvlab.experiment import run_experiment

    return serving_row(run_experiment(cfg, out_dir), prefix)
