"""Where a bare decode step's time goes: torch profiler (per op) + a Python stack sampler (per function).

``python experiments/profile_decode.py --batch 1 16 [--threads 1] [--steps 6] [--attention-backend auto]``
times ``steps`` greedy decode steps of SmolLM2 over a zero-filled cache of ``--context`` tokens per
sequence (as ``model_bench.py --no-prefill``), then profiles the same steps twice: once with
``torch.profiler`` (self CPU time per aten op, grouped into matmul / attention / gather / the rest)
and once with a sampler thread that reads the main thread's Python stack every millisecond
(``sys._current_frames``) and counts the innermost kvlab function (self) and every kvlab
function on the stack (inclusive). Prints one JSON object per batch size. The load average is in
the output: on a shared machine the absolute times are inflated; the shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_bench import BLOCK  # noqa: E402

from kvlab.executor.base import ScheduledSeq, StepInput  # noqa: E402
from kvlab.executor.torch_runner import TorchExecutor  # noqa: E402
from kvlab.models.config import resolve_model  # noqa: E402
from kvlab.request import SamplingParams  # noqa: E402

GROUPS = {"matmul (weights)": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm",
                                "mkldnn::_linear_pointwise", "kvlab::qgemm"),
          "attention (SDPA or the C op)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                           "aten::scaled_dot_product_attention", "aten::_softmax",
                                           "kvlab::paged_decode"),
          "K/V gather + write": ("aten::index_select", "aten::index_copy_", "aten::index")}


def steps_fn(ex: TorchExecutor, batch: int, context: int):
    per_seq = (context + 64) // BLOCK + 1
    ex.init_cache(per_seq * batch, 0, BLOCK)
    tables = [list(range(i * per_seq, (i + 1) * per_seq))[::-1] for i in range(batch)]  # not consecutive
    sp = SamplingParams(temperature=0, max_tokens=1000)
    pos = [context]

    def step() -> None:
        ex.execute(StepInput([ScheduledSeq(j, str(j), [1000 + j], pos[0], tables[j], 1, sp, sample_index=1)
                              for j in range(batch)]))
        pos[0] += 1

    return step


def sample_python(fn, n: int, interval: float = 1e-3) -> dict[str, list]:
    main = threading.get_ident()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    total = [0]

    def sampler() -> None:
        while not stop.is_set():
            f = sys._current_frames().get(main)
            seen = set()
            first = True
            while f is not None:
                path = f.f_code.co_filename
                if "kvlab" in path or "/kernels/" in path:
                    name = f"{Path(path).stem}.{f.f_code.co_name}"
                    if first:
                        own[name] += 1
                        first = False
                    if name not in seen:
                        incl[name] += 1
                        seen.add(name)
                f = f.f_back
            total[0] += 1
            time.sleep(interval)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    for _ in range(n):
        fn()
    stop.set()
    th.join()
    t = max(total[0], 1)
    return {"self": [(k, round(v / t, 3)) for k, v in own.most_common(8)],
            "inclusive": [(k, round(v / t, 3)) for k, v in incl.most_common(12)]}


def label_native_ops() -> None:
    """Make the C ops (kvlab.kernels.cpu_ops, called through ctypes: invisible to the profiler)
    show up as ``kvlab::paged_decode`` and ``kvlab::qgemm`` in this script's profiles."""
    from kvlab.kernels import cpu_backend, cpu_ops
    from kvlab.models import block_linear

    def label(name: str, op):
        def labelled(*args, **kwargs):
            with record_function(name):
                return op(*args, **kwargs)
        return labelled

    labelled = type(cpu_ops)("cpu_ops_labelled")
    labelled.__dict__.update(cpu_ops.__dict__, paged_decode=label("kvlab::paged_decode", cpu_ops.paged_decode),
                             qgemm=label("kvlab::qgemm", cpu_ops.qgemm))
    cpu_backend.cpu_ops = block_linear.cpu_ops = labelled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--attention-backend", default="auto")
    args = ap.parse_args()
    label_native_ops()
    ex = TorchExecutor(resolve_model("smollm2-135m"), device="cpu", dtype=args.dtype, num_threads=args.threads,
                       attention_backend=args.attention_backend)
    for b in args.batch:
        step = steps_fn(ex, b, args.context)
        step()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        wall, cpu = (time.perf_counter() - t) / args.steps, (time.process_time() - c) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(ops.values()) or 1.0
        grouped = {g: sum(v for k, v in ops.items() if k in names) / total for g, names in GROUPS.items()}
        grouped["everything else (small ops, dispatch)"] = 1 - sum(grouped.values())
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:10]
        py = sample_python(step, args.steps)
        print(json.dumps({"batch": b, "context": args.context, "dtype": str(ex.dtype),
                          "attention": ex.attention_backend, "threads": torch.get_num_threads(),
                          "step_ms": round(wall * 1e3, 1), "step_cpu_ms": round(cpu * 1e3, 1),
                          "loadavg": [round(x, 2) for x in os.getloadavg()],
                          "op_share": {k: round(v, 3) for k, v in grouped.items()},
                          "ops_per_step": round(sum(e.count for e in prof.key_averages()) / args.steps),
                          "top_ops_ms_per_step": [(k, round(v / 1e3 / args.steps, 2)) for k, v in top],
                          "python_sampler_share": py}), flush=True)


if __name__ == "__main__":
    main()
