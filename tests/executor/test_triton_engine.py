"""End to end through the engine: the Triton attention backend gives the torch backend's greedy tokens.

A tiny random-weight Llama (``model.checkpoint=random``, two layers) on the CPU, the Triton
kernels in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without CUDA). Chunked
prefill with a small token budget, so steps mix decodes, later prefill chunks and fresh prompts;
the prefix allocator adds prefix-hit chunks (prompts share their first blocks). The ``gpu`` test
repeats the comparison at SmolLM2's real size on CUDA.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from kvlab.engine import LLMEngine
from kvlab.models.config import resolve_model
from kvlab.request import SamplingParams

TRITON_OK = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
TINY = {"checkpoint": "random", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
        "head_dim": 16, "ffn_size": 128, "vocab_size": 256, "max_model_len": 128, "num_params": None}
ALLOCATORS = [("contiguous", {"reservation": "oracle", "placement": "first_fit"}), ("paged", {}), ("prefix", {})]


def prompts(n: int, shared: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    head = [rng.randrange(256) for _ in range(shared)]
    return [head + [rng.randrange(256) for _ in range(rng.randrange(3, 14))] for _ in range(n)]


def greedy_tokens(model: dict, backend: str, allocator: str, opts: dict, block_size: int, device: str,
                  ids: list[list[int]], new: int, budget: int, backend_obj=None,
                  num_blocks: int = 64) -> tuple[list[list[int]], int]:
    cfg = {
        "model": model, "device": device, "dtype": "float32", "seed": 3,
        "executor": {"name": "torch", "attention_backend": backend, "num_threads": 1, "kv_cache_gib": 0.05},
        "allocator": {"name": allocator, "block_size": block_size, "num_blocks": num_blocks, **opts},
        "scheduler": {"name": "fcfs", "max_num_batched_tokens": budget, "chunked_prefill": True, "watermark": 0.0},
        "kv": {"max_model_len": model["max_model_len"]},
    }
    eng = LLMEngine(cfg)
    assert eng.executor.attention_backend == backend
    if backend_obj is not None:
        eng.executor.model.backend = eng.executor.backend = backend_obj
    params = SamplingParams(temperature=0.0, max_tokens=new, min_tokens=new)
    reqs = [eng.add_request(p, params) for p in ids]
    while eng.has_unfinished_requests():
        eng.step()
    cached = sum(r.num_cached_tokens for r in reqs)
    return [r.seqs[0].output_token_ids for r in reqs], cached


@pytest.mark.skipif(not TRITON_OK, reason="Triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("allocator,opts", ALLOCATORS, ids=[a for a, _ in ALLOCATORS])
def test_tiny_llama_triton_equals_torch(allocator, opts):
    model = resolve_model("smollm2-135m") | TINY
    ids = prompts(4, shared=8)
    ref, _ = greedy_tokens(model, "torch", allocator, opts, 4, "cpu", ids, new=5, budget=12)
    got, cached = greedy_tokens(model, "triton", allocator, opts, 4, "cpu", ids, new=5, budget=12)
    assert all(len(t) == 5 for t in ref)
    assert got == ref
    if allocator == "prefix":
        assert cached > 0  # the prefix-hit path really ran


def test_the_comparison_can_fail():
    """Random N(0, 0.02) weights still make tokens depend on attention: damping it changes them."""
    from kvlab.kernels.torch_backend import TorchBackend

    class Damped(TorchBackend):
        def forward(self, layer, q, meta, scale):
            return super().forward(layer, q, meta, scale) * 0.5

    model = resolve_model("smollm2-135m") | TINY
    ids = prompts(4, shared=8)
    ref, _ = greedy_tokens(model, "torch", "paged", {}, 4, "cpu", ids, new=5, budget=12)
    damped, _ = greedy_tokens(model, "torch", "paged", {}, 4, "cpu", ids, new=5, budget=12, backend_obj=Damped())
    assert damped != ref


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("allocator,opts", ALLOCATORS, ids=[a for a, _ in ALLOCATORS])
def test_real_size_random_llama_triton_equals_torch_on_cuda(allocator, opts):
    model = resolve_model("smollm2-135m") | {"checkpoint": "random", "max_model_len": 2048}
    ids = prompts(16, shared=64, seed=1)
    ids = [p * 8 for p in ids]  # 300-600 tokens: several blocks, split-K decode
    ref, _ = greedy_tokens(model, "torch", allocator, opts, 16, "cuda", ids, new=24, budget=512, num_blocks=1024)
    got, _ = greedy_tokens(model, "triton", allocator, opts, 16, "cuda", ids, new=24, budget=512, num_blocks=1024)
    assert got == ref
