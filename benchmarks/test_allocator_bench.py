"""Per-operation cost of each allocator with 1,000 running requests, block size 16.

Run: ``.venv/bin/pytest benchmarks/test_allocator_bench.py --benchmark-enable``. Operations:
one decode token (the common in-block case and the every-16th new-block case), freeing a
2,000-token (125-block) request, forking it, and the prefix match of a 2,000-token prompt.
"""

from __future__ import annotations

import itertools

import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.request import Request, SamplingParams

pytestmark = pytest.mark.benchmark

BS = 16
N_RUNNING = 1000
PROMPT = 2000
NUM_BLOCKS = 140_000  # 1,000 x 128-block reservations (contiguous, max) + headroom
_ids = itertools.count()


def new_seq(prompt: list[int], n: int = 1):
    req = Request(f"b{next(_ids)}", prompt, SamplingParams(n=n, max_tokens=48), expected_output_len=48)
    return req.seqs[0]


def loaded(name: str):
    """An allocator holding 1,000 running 2,000-token requests with distinct prompts."""
    opts = {"reservation": "max", "placement": "first_fit"} if name == "contiguous" else {}
    alloc = ALLOCATORS.build(name, NUM_BLOCKS, BS, 2048, **opts)
    seqs = []
    for i in range(N_RUNNING):
        seq = new_seq([i * 7919 + t for t in range(PROMPT)])
        assert alloc.allocate_slots(seq, PROMPT, alloc.get_computed_blocks(seq)) is not None
        seq.num_computed_tokens = PROMPT
        seqs.append(seq)
    return alloc, seqs


@pytest.fixture(scope="module", params=ALLOCATORS.names())
def setup(request):
    return request.param, *loaded(request.param)


def test_decode_in_block(benchmark, setup) -> None:
    """A decode token that fits the last block (15 of every 16 steps)."""
    name, alloc, seqs = setup
    seq = seqs[500]
    seq.token_ids.append(1)  # position 2000: block 125 (of the 126th), slot 0 -> allocate once
    alloc.allocate_slots(seq, 1)
    seq.num_computed_tokens = 2001
    seq.token_ids.append(2)
    result = benchmark(alloc.allocate_slots, seq, 1)
    assert result == []


def test_decode_new_block(benchmark, setup) -> None:
    """A decode token that needs a new block (free the block again between rounds)."""
    name, alloc, seqs = setup
    seq = new_seq(list(range(10**6, 10**6 + 32)))
    alloc.allocate_slots(seq, 32)
    seq.num_computed_tokens = 32
    seq.token_ids.append(3)

    def reset():
        alloc.free(seq)
        alloc.allocate_slots(seq, 32)
        return (seq, 1), {}

    benchmark.pedantic(alloc.allocate_slots, setup=reset, rounds=300)
    alloc.free(seq)


def test_free_125_blocks(benchmark, setup) -> None:
    name, alloc, seqs = setup
    seq = new_seq([5] * PROMPT)

    def fill():
        assert alloc.allocate_slots(seq, PROMPT) is not None
        return (seq,), {}

    benchmark.pedantic(alloc.free, setup=fill, rounds=300)


def test_fork(benchmark, setup) -> None:
    name, alloc, seqs = setup
    parent = seqs[10]
    children = []

    def make_child():
        for c in children:
            alloc.free(c)
        children.clear()
        children.append(parent.fork())
        return (parent, children[0]), {}

    benchmark.pedantic(alloc.fork, setup=make_child, rounds=300)
    for c in children:
        alloc.free(c)


def test_prefix_match_2000(benchmark, setup) -> None:
    name, alloc, seqs = setup
    probe = new_seq(list(seqs[42].token_ids[:PROMPT]))
    blocks, tokens = benchmark(alloc.get_computed_blocks, probe)
    assert tokens == ((PROMPT - 1) // BS * BS if name == "prefix" else 0)
