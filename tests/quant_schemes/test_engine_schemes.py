"""Every allocator and both preemption modes keep working under every KV format.

A tiny random-weight Llama (two layers) through the real engine on the CPU with the torch backend.
The pool is small enough that requests are preempted (recompute, or swap out and back in), and the
prefix allocator shares prompt blocks; every request must finish with its full output, the
allocator's invariants must hold, and the greedy tokens must equal those of the same format on a
pool big enough that nothing is preempted (preemption must not change what the cache holds).
kivi2 runs with a small residual window so that its 2-bit path, reopening, and closing before
copy-on-write and swap-out are all exercised; its tokens must mostly (not exactly) agree, see
the comment in the test.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kvlab.engine import LLMEngine
from kvlab.models.config import resolve_model
from kvlab.request import SamplingParams
from tests.quant_schemes.helpers import SCHEMES

TINY = {"checkpoint": "random", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
        "head_dim": 16, "ffn_size": 128, "vocab_size": 256, "max_model_len": 128, "num_params": None}
ALLOCATORS = [("contiguous", {"reservation": "oracle", "placement": "first_fit"}), ("paged", {}), ("prefix", {})]
QUANT = {s: s for s in SCHEMES} | {"kivi2": {"name": "kivi2", "group_size": 4, "residual": 6,
                                              "residual_pool_fraction": 1.0}}


def tiny_cfg(quant: Any, allocator: str = "paged", opts: dict | None = None, num_blocks: int | None = 64,
             preemption: str = "recompute", kv_cache_gib: float = 0.05, swap_gib: float = 0.0) -> dict:
    model = resolve_model("smollm2-135m") | TINY
    return {
        "model": model, "device": "cpu", "dtype": "float32", "seed": 3,
        "executor": {"name": "torch", "attention_backend": "torch", "num_threads": 1, "kv_cache_gib": kv_cache_gib},
        "allocator": {"name": allocator, "block_size": 4, "num_blocks": num_blocks, **(opts or {})},
        "scheduler": {"name": "fcfs", "max_num_batched_tokens": 24, "chunked_prefill": True, "watermark": 0.0,
                      "preemption": preemption},
        "kv": {"max_model_len": 128, "swap_space_gib": swap_gib},
        "kv_quant": QUANT[quant] if isinstance(quant, str) else quant,
    }


def prompts(n: int = 6, shared: int = 8, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    head = [rng.randrange(256) for _ in range(shared)]
    return [head + [rng.randrange(256) for _ in range(rng.randrange(4, 16))] for _ in range(n)]


def run(cfg: dict, ids: list[list[int]], new: int = 12) -> tuple[list[list[int]], LLMEngine]:
    eng = LLMEngine(cfg)
    params = SamplingParams(temperature=0.0, max_tokens=new, min_tokens=new)
    reqs = [eng.add_request(p, params) for p in ids]
    while eng.has_unfinished_requests():
        eng.step()
        eng.allocator.check_invariants()
    return [r.seqs[0].output_token_ids for r in reqs], eng


def preemptions(eng: LLMEngine) -> int:
    return eng.stats.num_preemptions


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator,opts", ALLOCATORS, ids=[a for a, _ in ALLOCATORS])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_small_pool_preempts_and_matches_big_pool(scheme: str, allocator: str, opts: dict, preemption: str) -> None:
    ids = prompts()
    ref, _ = run(tiny_cfg(scheme, "paged", num_blocks=128), ids)
    got, eng = run(tiny_cfg(scheme, allocator, opts, num_blocks=14, preemption=preemption, swap_gib=0.01), ids)
    assert all(len(t) == 12 for t in got)
    if allocator != "contiguous":  # the oracle reservation admits only what fits: it never preempts
        assert preemptions(eng) > 0  # the small pool really preempted
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
    if scheme == "kivi2":
        # by design (docs/kernels.md) kivi2's window sits at the END of each step's span: a
        # recomputed prompt chunk attends to 2-bit blocks its tokens first saw in full precision,
        # and a swap-out closes the partial tail block early; so tokens may differ; most must not
        same = sum(a == b for x, y in zip(got, ref) for a, b in zip(x, y))
        assert same >= 0.5 * sum(map(len, ref))
    else:
        assert got == ref


def test_quantization_changes_tokens_somewhere() -> None:
    """The comparison can fail: int4 vs none differ on some token (random weights, long enough)."""
    ids = prompts(6, seed=5)
    none, _ = run(tiny_cfg("none"), ids, new=24)
    kivi, _ = run(tiny_cfg("kivi2"), ids, new=24)
    assert none != kivi


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cpu_backend_reads_every_format_like_the_reference(scheme: str) -> None:
    """``attention_backend=cpu`` (what ``auto`` picks on a CPU) hands quantized layers to the
    reference read path, including fp8 with fixed scales, which has no per-block metadata: the
    greedy tokens equal the torch backend's."""
    ids = prompts(4, seed=7)
    ref, _ = run(tiny_cfg(scheme), ids)
    cfg = tiny_cfg(scheme)
    cfg["executor"]["attention_backend"] = "cpu"
    got, eng = run(cfg, ids)
    assert type(eng.executor.backend).__name__ == "CpuBackend"
    assert got == ref
