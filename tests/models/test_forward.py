"""kvlab's paged forward equals transformers' logits (same dequantized SmolLM2 weights, fp32).

Covers a whole-prompt prefill, chunked prefill + decode steps through a shuffled
(non-contiguous) block table at block sizes 1, 16 and 64, a mixed batch (two prefills and a
decode in one step) and a prefix hit (start_pos > 0 over blocks another sequence wrote).
"""

from __future__ import annotations

import pytest
import torch

from kvlab.kernels import build_metadata
from tests.models.helpers import hf_logits, shuffled_table

ATOL = 1e-3


def run_chunk(executor, ids: list[int], start: int, table: list[int], block_size: int,
              all_rows: bool = True) -> torch.Tensor:
    """Forward one sequence's chunk ids[start:] (as a chunk or a decode) through the cache."""
    n = len(ids) - start
    meta = build_metadata([(start, n, table)], 1 if n == 1 else 0, block_size, torch.device("cpu"))
    with torch.inference_mode():
        return executor.model.forward(
            torch.tensor(ids[start:]), torch.arange(start, len(ids)), executor.kv_cache, meta,
            None if all_rows else torch.tensor([n - 1]),
        )


def test_whole_prompt_prefill(executor, hf_model, prompt_ids):
    executor.init_cache(64, 0, 16)
    for i, ids in enumerate(prompt_ids):
        ref = hf_logits(hf_model, ids)
        out = run_chunk(executor, ids, 0, shuffled_table(64, seed=i), 16)
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_chunked_prefill_then_decode(executor, hf_model, prompt_ids, block_size):
    ids = prompt_ids[2]  # the longest (chat template) prompt
    ref = hf_logits(hf_model, ids)
    num_blocks = (len(ids) + block_size - 1) // block_size + 8
    executor.init_cache(num_blocks, 0, block_size)
    table = shuffled_table(num_blocks, seed=block_size)
    # chunks of 7 and 13 tokens, then the rest of the prompt one decode step at a time
    bounds = [0, 7, 20, *range(21, len(ids) + 1)]
    outs = [run_chunk(executor, ids[:e], s, table, block_size) for s, e in zip(bounds, bounds[1:])]
    torch.testing.assert_close(torch.cat(outs), ref, atol=ATOL, rtol=0)


def test_mixed_batch_two_prefills_one_decode(executor, hf_model, prompt_ids):
    a, b, c = prompt_ids[1], prompt_ids[2], prompt_ids[3]
    executor.init_cache(128, 0, 16)
    tables = [shuffled_table(128, seed=7)[i * 40:(i + 1) * 40] for i in range(3)]
    run_chunk(executor, c[:-1], 0, tables[2], 16)  # c's prompt minus one token is in the cache
    seqs = [(len(c) - 1, 1, tables[2]), (0, len(a), tables[0]), (0, len(b), tables[1])]
    meta = build_metadata(seqs, 1, 16, torch.device("cpu"))
    ids = [c[-1], *a, *b]
    pos = [len(c) - 1, *range(len(a)), *range(len(b))]
    rows = torch.tensor([0, len(a), len(a) + len(b)])
    with torch.inference_mode():
        out = executor.model.forward(torch.tensor(ids), torch.tensor(pos), executor.kv_cache, meta, rows)
    for got, full in zip(out, (c, a, b)):
        torch.testing.assert_close(got, hf_logits(hf_model, full)[-1], atol=ATOL, rtol=0)


def test_prefix_hit_reads_blocks_written_by_another_sequence(executor, hf_model, prompt_ids):
    ids = prompt_ids[3]
    executor.init_cache(32, 0, 4)
    first = shuffled_table(32, seed=3)
    shared = len(ids) // 4 - 1  # full blocks the second sequence reuses
    run_chunk(executor, ids, 0, first[:16], 4)
    second = first[:shared] + first[16:32]
    out = run_chunk(executor, ids, shared * 4, second, 4)
    torch.testing.assert_close(out, hf_logits(hf_model, ids)[shared * 4:], atol=ATOL, rtol=0)
