"""Preemption: who is preempted (the latest arrival), where it goes (recompute: front of
``waiting``; swap: ``swapped``), which blocks move, and the end of a request that can never grow."""

from __future__ import annotations

import pytest
from helpers import chunk_ids, ids, make, req, step, table

from kvlab.request import SequenceStatus


def two_running(preemption: str, cpu_blocks: int = 0):
    s = make(num_blocks=4, cpu_blocks=cpu_blocks, preemption=preemption)  # 16 slots
    r0, r1 = req("r0", [1] * 7, max_tokens=4, t=0), req("r1", [2] * 7, max_tokens=4, t=1)
    s.add_request(r0)
    s.add_request(r1)
    out, _ = step(s)  # prefill: r0 -> [0, 1], r1 -> [2, 3]
    assert (table(s, r0), table(s, r1)) == ([0, 1], [2, 3])
    out, _ = step(s)  # decode position 7: still inside the second block
    assert chunk_ids(out) == [("r0", 1), ("r1", 1)] and not out.preempted
    return s, r0, r1


def test_recompute_preempts_the_latest_arrival_and_frees_its_blocks():
    s, r0, r1 = two_running("recompute")
    out, _ = step(s)  # r0 needs a 3rd block: r1 goes, its tail block 3 is reused first
    assert ids(out.preempted) == ["r1"] and chunk_ids(out) == [("r0", 1)]
    assert table(s, r0) == [0, 1, 3] and table(s, r1) == []
    assert ids(s.waiting) == ["r1"] and ids(s.running) == ["r0"]
    seq = r1.seqs[0]
    assert (seq.status, seq.num_computed_tokens, seq.num_tokens) == (SequenceStatus.WAITING, 0, 9)
    assert r1.num_preemptions == 1 and s.num_preemptions == 1
    out, fin = step(s)  # r0's last token; r1 (9 tokens = 3 blocks) does not fit the 1 free block
    assert ids(fin) == ["r0"] and chunk_ids(out) == [("r0", 1)]
    out, _ = step(s)  # r1 recomputes its 9 tokens (prompt + the token it had sampled)
    assert chunk_ids(out) == [("r1", 9)] and out.num_prefill_tokens == 9
    assert table(s, r1) == [2, 3, 1]


def test_swap_preempts_the_latest_arrival_and_brings_it_back_first():
    s, r0, r1 = two_running("swap", cpu_blocks=8)
    out, _ = step(s)
    assert ids(out.preempted) == ["r1"] and out.blocks_to_swap_out == [(2, 0), (3, 1)]
    assert table(s, r0) == [0, 1, 3] and ids(s.swapped) == ["r1"] and not s.waiting
    assert r1.seqs[0].status is SequenceStatus.SWAPPED and r1.seqs[0].num_computed_tokens == 8
    s.add_request(req("late", [5] * 2, max_tokens=1, t=2))
    out, fin = step(s)  # r0 finishes; nothing is admitted while r1 is swapped out
    assert ids(fin) == ["r0"] and chunk_ids(out) == [("r0", 1)] and ids(s.waiting) == ["late"]
    out, _ = step(s)  # r1 comes back into the least recently freed blocks, then decodes
    assert out.blocks_to_swap_in == [(0, 2), (1, 3)]
    assert chunk_ids(out) == [("r1", 1), ("late", 2)] and table(s, r1) == [2, 3, 1]


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_a_lone_request_that_outgrows_the_pool_ends_with_length(preemption):
    # Bypass add_request's worst-case check (as a request with an optimistic max_tokens would):
    # the request can grow to 16 tokens, then nothing is left to preempt but itself.
    s = make(num_blocks=4, cpu_blocks=8, preemption=preemption)
    big = req("big", [1] * 10, max_tokens=20)
    s.waiting.append(big)
    small = req("small", [2] * 3, max_tokens=2, t=1)
    for i in range(20):
        out, fin = step(s)
        if out.rejected:
            break
        if i == 0:
            s.add_request(small)  # waits behind big: admission needs free blocks
    assert ids(out.rejected) == ["big"] and ids(fin) == ["big"]
    seq = big.seqs[0]
    assert seq.status is SequenceStatus.FINISHED_CAPACITY and seq.status.finish_reason == "length"
    assert seq.num_tokens == 17 and seq.num_computed_tokens == 16  # every slot of the pool was used
    assert "cannot hold this request's next token" in big.finish_detail
    assert s.allocator.num_free_blocks() == 4 and not s.running and not s.swapped
    for _ in range(5):  # and the request behind it runs
        step(s)
    assert small.is_finished and small.seqs[0].num_output_tokens == 2
