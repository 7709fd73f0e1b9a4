"""Greedy decoding through the whole engine equals transformers' generate, token for token.

Eight prompts x 48 new tokens, batched together, chunked prefill on, under every allocator
(contiguous; paged with block sizes 1, 16, 64; prefix) — and with preemption forced by a tiny KV
budget, both by recompute and by swap. fp32 on the CPU. transformers runs one prompt at a time
(no padding), so the reference is exact.
"""

from __future__ import annotations

import pytest
import torch

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams

NEW = 48
PROMPTS = [
    "The capital of France is",
    "def quicksort(items):\n",
    "Memory fragmentation happens when",
    "A haiku about the sea:",
    "List three prime numbers:",
    "The quick brown fox",
    "In 1969, astronauts",
    "Translate to German: good morning, my friend",
]


@pytest.fixture(scope="module")
def prompt_ids(executor) -> list[list[int]]:
    return [executor.tokenizer.encode(p) for p in PROMPTS]


@pytest.fixture(scope="module")
def reference(hf_model, executor, prompt_ids) -> list[list[int]]:
    out = []
    for p in prompt_ids:
        with torch.inference_mode():
            ids = hf_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                    max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                    pad_token_id=executor.eos_token_id)
        out.append(ids[0, len(p):].tolist())
    return out


def make_engine(executor, allocator: str, block_size: int, num_blocks: int | None, preemption: str,
                budget: int = 24, swap_blocks: int = 0, **opts) -> LLMEngine:
    cfg = {
        "allocator": {"name": allocator, "block_size": block_size, "num_blocks": num_blocks, **opts},
        "scheduler": {"name": "fcfs", "max_num_batched_tokens": budget, "chunked_prefill": True,
                      "preemption": preemption, "watermark": 0.0},
        "executor": {"name": "torch"},
        "model": {"max_model_len": 512, "vocab_size": 49152},
        "kv": {"max_model_len": 512,
               "swap_space_gib": swap_blocks * executor.kv_bytes_per_block(block_size) / 2**30},
    }
    return LLMEngine(cfg, executor=executor)


CASES = [
    ("contiguous", 16, None, "recompute", {"reservation": "oracle", "placement": "first_fit"}),
    ("paged", 1, None, "recompute", {}),
    ("paged", 16, None, "recompute", {}),
    ("paged", 64, None, "recompute", {}),
    ("prefix", 16, None, "recompute", {}),
    ("paged", 16, 14, "recompute", {}),   # 224 slots for ~8 x 60 tokens: preemption is forced
    ("paged", 16, 14, "swap", {}),
]


@pytest.mark.parametrize("allocator,block_size,num_blocks,preemption,opts", CASES,
                         ids=[f"{c[0]}-bs{c[1]}-{c[3]}{'-tiny' if c[2] else ''}" for c in CASES])
def test_engine_greedy_equals_transformers(executor, prompt_ids, reference, allocator, block_size,
                                           num_blocks, preemption, opts):
    eng = make_engine(executor, allocator, block_size, num_blocks, preemption, swap_blocks=64, **opts)
    params = SamplingParams(temperature=0.0, max_tokens=NEW, min_tokens=NEW)
    reqs = [eng.add_request(p, params, expected_output_len=NEW) for p in prompt_ids]
    max_batch = 0
    while eng.has_unfinished_requests():
        eng.step()
        max_batch = max(max_batch, len(eng.scheduler.running))
        eng.allocator.check_invariants()
    for req, ref in zip(reqs, reference):
        assert req.seqs[0].output_token_ids == ref, req.request_id
    assert max_batch >= 2  # requests really were batched together
    assert any(s.num_prefill_tokens and s.num_decode_tokens for s in eng.step_records)  # mixed steps
    if num_blocks is not None:
        assert sum(r.num_preemptions for r in eng.request_records) > 0
        if preemption == "swap":
            assert sum(s.swapped_out_blocks for s in eng.step_records) > 0
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
