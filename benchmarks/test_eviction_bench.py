"""Cost of evicting one cached block vs the number of cached blocks (10^3, 10^4, 10^5).

Run: ``.venv/bin/pytest benchmarks/test_eviction_bench.py --benchmark-enable``. A prefix
allocator caches ``n`` unreferenced blocks (``n / 125`` finished 2,000-token requests); each
round evicts through the index (``index.evict()``, one timer pair) and checks that blocks left the
cache. ``lru`` is O(1) (an ordered dict); ``lfu``, ``fifo`` and ``lru-depth`` are O(log n) heaps.
``fifo`` evicts a chain's first block and drops its unreachable descendants with it (125 blocks in
one call here), so its time is per call, amortized O(1) per block dropped.
"""

from __future__ import annotations

import gc
import itertools
import random

import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.eviction import EVICTION
from kvlab.request import Request, SamplingParams

pytestmark = pytest.mark.benchmark

BS, PROMPT = 16, 2000
_ids = itertools.count()


def cached_pool(policy: str, n_blocks: int):
    alloc = ALLOCATORS.build("prefix", n_blocks + 200, BS, 2048, index="hash", eviction=policy)
    rng = random.Random(1)
    for _ in range(n_blocks // (PROMPT // BS)):
        req = Request(f"e{next(_ids)}", [rng.randrange(100, 50_000) for _ in range(PROMPT)], SamplingParams())
        seq = req.seqs[0]
        assert alloc.allocate_slots(seq, PROMPT) is not None
        alloc.free(seq)
    return alloc


@pytest.mark.parametrize("n_blocks", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("policy", EVICTION.names())
def test_evict_one_block(benchmark, policy: str, n_blocks: int) -> None:
    alloc = cached_pool(policy, n_blocks)
    index = alloc.index
    start = index.num_cached()
    assert start >= n_blocks * 0.99 and index.num_evictable() == start
    gc.collect()
    gc.freeze()
    try:
        per_call = PROMPT // BS if policy == "fifo" else 1  # blocks leaving the cache per call
        benchmark.pedantic(index.evict, rounds=max(1, min(500, start // per_call // 2)), iterations=1)
    finally:
        gc.unfreeze()
    assert index.num_cached() < start and index.num_evictable() == index.num_cached()
