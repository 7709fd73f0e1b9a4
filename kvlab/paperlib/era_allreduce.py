"""Paper-era mode's all-reduce term: what the engine's NCCL path cost per call, from a published measurement.

A tensor-parallel step runs two all-reduces per decoder layer. The datasheet roofline prices each
one as link latency plus bytes over NVLink (``interconnect_latency_us`` ~10 µs, nccl-tests scale).
A serving engine that calls NCCL through PyTorch pays more per call. vllm-project/vllm PR #2192
("Custom all reduce kernels", 2023-12-19) replaced those NCCL calls with a latency-optimal kernel
and published ``benchmarks/benchmark_latency.py`` before and after (:data:`ROWS`; input 256,
output 256 tokens, ``--num-iters 5``). Nothing in it comes from the vLLM paper.

Per call, the saving is::

    saving = (latency_before - latency_after) / (decode_steps x calls_per_step)
             decode_steps = output_len - 1    (the first token comes from the prompt step, whose
                                               BS x 256-token all-reduces exceed the custom kernel's
                                               8 MiB limit and stay on NCCL)
             calls_per_step = 2 x layers + 1  (o_proj and down_proj per layer, plus the
                                               vocab-parallel embedding's)

Only the two A100 rows are used: the other two ran on GPUs without NVLink (A30) or of another
generation (T4). The two rows agree within 10% across TP 2 and 4 and two model sizes.

Assumptions, stated: (1) the whole latency change comes from the decode steps' all-reduces (the PR
changed nothing else on that path); (2) the custom kernel costs about what kvlab's datasheet term
does (link latency + bytes), so the saving is the engine's NCCL cost BEYOND the datasheet term: it
becomes ``hardware.engine_allreduce_us``, added to each all-reduce when TP >= 2; (3) the paper's
2023 engine paid the same per call. Caveat on (3): PR #2192 measured NCCL inside CUDA graphs, the
2023 engine called it eagerly (the direction of that difference is not known). An A100-80GB
measurement is applied to the A100-40GB panels (same SXM4 NVLink fabric).
``python -m kvlab.paperlib.era_allreduce`` writes ``results/paper/era2023/allreduce_fit.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from kvlab.paperlib.era_fit import ERA_YAML, yaml_hardware

SOURCE = "https://github.com/vllm-project/vllm/pull/2192 (description, 2023-12-19: 'Latency and memory' table)"
YAML_KEY = "engine_allreduce_us"
# Decoder layers: Llama-2-70B 80 (conf/model/llama-2-70b.yaml); LLaMA-33B 60 (Touvron et al. 2023,
# arXiv 2302.13971, Table 2: 32.5B, dimension 6656, 52 heads, 60 layers).
ROWS = {
    "llama-70b_a100-80g_tp4_bs64": {"layers": 80, "tp": 4, "batch": 64, "input_len": 256, "output_len": 256,
                                    "before_s": 16.37, "after_s": 14.57},
    "llama-33b_a100-80g_tp2_bs64": {"layers": 60, "tp": 2, "batch": 64, "input_len": 256, "output_len": 256,
                                    "before_s": 15.88, "after_s": 14.38},
}


def per_call_saving_us(row: dict[str, float]) -> float:
    """µs saved per all-reduce call in one PR row (see the module docstring's formula). Pure."""
    calls = (row["output_len"] - 1) * (2 * row["layers"] + 1)
    return 1e6 * (row["before_s"] - row["after_s"]) / calls


def derive(rows: dict[str, dict[str, float]] = ROWS) -> dict[str, Any]:
    """The per-call saving of each row and their mean, the value paper-era mode uses. Pure."""
    per_row = {k: round(per_call_saving_us(r), 2) for k, r in rows.items()}
    if any(v <= 0 for v in per_row.values()):
        raise ValueError(f"a row's latency did not fall ({per_row}): no NCCL cost to derive")
    return {"source": SOURCE, "rows": rows, "per_call_saving_us": per_row,
            YAML_KEY: round(statistics.fmean(per_row.values()), 1),
            "range_us": [min(per_row.values()), max(per_row.values())]}


def yaml_value(path: Path = ERA_YAML) -> float:
    """``engine_allreduce_us`` as ``conf/experiment/era/paper2023.yaml`` sets it."""
    return yaml_hardware((YAML_KEY,), path)[YAML_KEY]


def run(root: Path) -> dict[str, Any]:
    """Derive and write ``root/allreduce_fit.json``."""
    out = derive()
    root.mkdir(parents=True, exist_ok=True)
    (root / "allreduce_fit.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m kvlab.paperlib.era_allreduce``: derive the per-all-reduce engine cost (instant)."""
    import argparse

    from kvlab.paperlib.era import ROOT

    ap = argparse.ArgumentParser(prog="python -m kvlab.paperlib.era_allreduce", description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    out = run(ROOT)
    for name, v in out["per_call_saving_us"].items():
        print(f"{name}: {v:.1f} µs saved per all-reduce call")
    print(f"set in conf/experiment/era/paper2023.yaml:\n  {YAML_KEY}: {out[YAML_KEY]}   "
          f"# the two rows' mean; they span {out['range_us'][0]}-{out['range_us'][1]}")
    print(f"results: {ROOT / 'allreduce_fit.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
