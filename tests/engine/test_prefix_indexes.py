"""The prefix allocator's indexes and eviction policies inside the engine: ``lpm`` orders by the
cache with either index, and hash and radix give the same hits and block tables step by step."""

from __future__ import annotations

import pytest

from kvlab.allocator.eviction import EVICTION
from kvlab.request import SamplingParams

SYSTEM = list(range(500, 540))  # a 10-block system prompt shared by every request (block size 4)


def run(engine_factory, index: str, eviction: str, scheduler: str = "lpm"):
    # 40 blocks: the shared prefix plus a few private tails fit, so cached blocks get evicted
    eng, _ = engine_factory(num_blocks=40, allocator="prefix", scheduler=scheduler, index=index,
                            eviction=eviction, budget=48)
    reqs = []
    for i in range(16):
        prompt = SYSTEM[: 8 + 4 * (i % 8)] + [900 + i, 901 + i, 902 + (i % 3)]
        reqs.append(eng.add_request(prompt, SamplingParams(max_tokens=5, ignore_eos=True, temperature=0.0)))
    tables = []
    for _ in range(2000):
        if not eng.has_unfinished_requests():
            break
        eng.step()
        tables.append(sorted(tuple(eng.allocator.block_table(s)) for r in reqs for s in r.live_seqs()))
    assert not eng.has_unfinished_requests()
    outs = [tuple(eng.make_output(r).outputs[0].token_ids) for r in reqs]
    assert all(len(o) == 5 for o in outs)
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
    return outs, eng.allocator.stats(), tables


@pytest.mark.parametrize("eviction", EVICTION.names())
def test_lpm_runs_with_both_indexes_and_they_agree(engine_factory, eviction):
    h_out, h_stats, h_tables = run(engine_factory, "hash", eviction)
    r_out, r_stats, r_tables = run(engine_factory, "radix", eviction)
    assert h_stats["prefix_hit_tokens"] > 0, "the shared system prompt never hit"
    # the fake executor's token ids count up across engines, so compare lengths, hits and tables
    assert [len(o) for o in h_out] == [len(o) for o in r_out]
    assert (h_stats, h_tables) == (r_stats, r_tables)


def test_lpm_orders_by_cached_prefix_with_radix(engine_factory):
    eng, _ = engine_factory(num_blocks=64, allocator="prefix", scheduler="lpm", index="radix", budget=256)
    warm = eng.add_request(SYSTEM + [1, 2, 3], SamplingParams(max_tokens=1, ignore_eos=True))
    while eng.has_unfinished_requests():
        eng.step()
    cold = eng.add_request(list(range(2000, 2040)), SamplingParams(max_tokens=1, ignore_eos=True))
    hot = eng.add_request(SYSTEM + [7, 8, 9], SamplingParams(max_tokens=1, ignore_eos=True))
    eng.scheduler._order_waiting()
    assert [r.request_id for r in eng.scheduler.waiting] == [hot.request_id, cold.request_id]
    assert warm.is_finished
