"""The allocator's block-map view and the snapshot format: what each block shows under every
allocator agrees with the allocator's own counts and tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.block_map import CACHED, FREE, PRIVATE, RESERVED, SHARED, SLACK, block_map
from kvlab.dashboard.snapshot import decode_arrays, encode
from kvlab.engine_stats import EngineStats, KVUsage
from kvlab.request import Request, SamplingParams

BS = 4


def make_seq(rid: str, tokens: list[int], out_len: int = 8):
    req = Request(rid, tokens, SamplingParams(max_tokens=out_len, ignore_eos=True), 0.0, expected_output_len=out_len)
    return req.seqs[0]


def admit(alloc, seq):
    computed = alloc.get_computed_blocks(seq)
    assert alloc.allocate_slots(seq, seq.num_tokens - computed[1], computed) is not None
    seq.num_computed_tokens = seq.num_tokens


def check_against_allocator(alloc, bm):
    assert bm.num_blocks == alloc.num_blocks and bm.state.shape == (alloc.num_blocks,)
    assert int(np.count_nonzero(bm.ref)) == alloc.num_blocks - alloc.num_free_blocks()
    for sid, table in alloc._tables.items():
        rid = alloc._seqs[sid].request.request_id
        for b in table:
            owners = bm.shared_owners.get(b, (bm.owner[b] - 1,))
            assert rid in [bm.requests[i] for i in owners]


def test_paged_blocks_show_owner_and_fill():
    alloc = ALLOCATORS.build("paged", 32, block_size=BS, max_model_len=64)
    a, b = make_seq("a", list(range(10))), make_seq("b", list(range(100, 105)))
    admit(alloc, a)
    admit(alloc, b)
    bm = block_map(alloc)
    check_against_allocator(alloc, bm)
    ta, tb = alloc.block_table(a), alloc.block_table(b)
    assert [int(bm.fill[x]) for x in ta] == [4, 4, 2] and [int(bm.fill[x]) for x in tb] == [4, 1]
    assert all(bm.state[x] == PRIVATE for x in ta + tb)
    assert bm.requests == ("a", "b") and bm.owner[ta[0]] == 1 and bm.owner[tb[0]] == 2
    assert bm.counts()["free"] == 32 - 5 and bm.counts()["in_use"] == 5


def test_prefix_blocks_shared_across_requests_then_cached_when_free():
    alloc = ALLOCATORS.build("prefix", 32, block_size=BS, max_model_len=64)
    prefix = list(range(12))
    a, b = make_seq("a", prefix + [50, 51]), make_seq("b", prefix + [60])
    admit(alloc, a)
    admit(alloc, b)
    bm = block_map(alloc)
    check_against_allocator(alloc, bm)
    shared = alloc.block_table(a)[:3]
    assert shared == alloc.block_table(b)[:3]
    for x in shared:
        assert bm.state[x] == SHARED and bm.ref[x] == 2
        assert sorted(bm.requests[i] for i in bm.shared_owners[x]) == ["a", "b"]
    assert len(bm.shared_owners) == 3
    alloc.free(a)
    alloc.free(b)
    bm = block_map(alloc)
    assert {int(x) for x in np.flatnonzero(bm.state == CACHED)} >= set(shared)
    assert bm.counts()["in_use"] == 0 and bm.requests == ()
    assert all(bm.fill[x] == BS for x in np.flatnonzero(bm.state == CACHED))


def test_contiguous_run_shows_written_blocks_reserved_tail_and_slack():
    # reservation=max: the run covers max_model_len slots; buddy placement rounds 5 blocks up to 8
    alloc = ALLOCATORS.build("contiguous", 32, block_size=BS, max_model_len=20, reservation="max")
    a = make_seq("a", list(range(6)))
    admit(alloc, a)
    bm = block_map(alloc)
    check_against_allocator(alloc, bm)
    table = alloc.block_table(a)
    assert len(table) == 8 and table == list(range(table[0], table[0] + 8))
    states = [int(bm.state[x]) for x in table]
    assert states == [PRIVATE, PRIVATE, RESERVED, RESERVED, RESERVED, SLACK, SLACK, SLACK]
    assert [int(bm.fill[x]) for x in table[:3]] == [4, 2, 0]
    assert bm.counts()["free"] == 24


def test_contiguous_held_runs_for_forks_are_reserved_for_their_request():
    alloc = ALLOCATORS.build("contiguous", 64, block_size=BS, max_model_len=16, reservation="max")
    req = Request("g", list(range(5)), SamplingParams(n=3, max_tokens=4, ignore_eos=True), 0.0, expected_output_len=4)
    seq = req.seqs[0]
    admit(alloc, seq)
    bm = block_map(alloc)
    held = [b for b in range(64) if bm.owner[b] and b not in alloc.block_table(seq)]
    assert len(held) == 2 * 4 and all(bm.state[b] == RESERVED for b in held)
    assert bm.requests == ("g",) and int(np.count_nonzero(bm.ref)) == 64 - alloc.num_free_blocks()


def test_block_map_does_not_mutate_the_allocator():
    alloc = ALLOCATORS.build("prefix", 16, block_size=BS, max_model_len=64)
    a = make_seq("a", list(range(9)))
    admit(alloc, a)
    before = (list(alloc.pool.ref), list(alloc.pool.free_queue), {k: list(v) for k, v in alloc._tables.items()})
    block_map(alloc)
    assert before == (list(alloc.pool.ref), list(alloc.pool.free_queue),
                      {k: list(v) for k, v in alloc._tables.items()})
    alloc.check_invariants()


@pytest.mark.parametrize("name", ["paged", "prefix", "contiguous"])
def test_snapshot_round_trips_through_json(name):
    alloc = ALLOCATORS.build(name, 40, block_size=BS, max_model_len=32)
    for i in range(3):
        admit(alloc, make_seq(f"r{i}", list(range(i, i + 7))))
    bm = block_map(alloc)
    stats = EngineStats(step=7, kv=KVUsage(total_blocks=40, free_blocks=alloc.num_free_blocks(), block_size=BS))
    snap = json.loads(json.dumps(encode(bm, stats, name)))
    arrays = decode_arrays(snap)
    for key in ("state", "owner", "ref", "fill"):
        assert np.array_equal(arrays[key], getattr(bm, key))
    assert snap["step"] == 7 and snap["allocator"] == name and snap["requests"] == ["r0", "r1", "r2"]
    assert snap["stats"]["blocks_in_use"] == 40 - alloc.num_free_blocks()
    assert len(snap["state"]) <= 4 * (40 // 3 + 1)  # base64 of one byte per block
    assert FREE in arrays["state"]
