"""The vLLM paper's worked examples, pinned: Fig. 3 (contiguous reservation), Fig. 6 (block-table
translation), Fig. 8 (parallel sampling with copy-on-write), Fig. 9 (beam fork/free), and a
shared-prefix hit with LRU eviction."""

from __future__ import annotations

from kvlab.allocator import ALLOCATORS
from kvlab.request import Request, SamplingParams


def make_seq(prompt: list[int], expected_out: int, n: int = 1, rid: str = "r"):
    req = Request(rid, prompt, SamplingParams(n=n, max_tokens=max(expected_out, 1)),
                  expected_output_len=expected_out)
    return req.seqs[0]


def prefill(alloc, seq, computed=None) -> list[int]:
    skip = computed[1] if computed else 0
    got = alloc.allocate_slots(seq, seq.num_tokens - skip, computed)
    assert got is not None
    seq.num_computed_tokens = seq.num_tokens
    return got


def decode(alloc, seq, token: int = 0) -> list[int] | None:
    seq.token_ids.append(token)
    got = alloc.allocate_slots(seq, 1)
    if got is not None:
        seq.num_computed_tokens += 1
    return got


def test_fig3_contiguous_max_reservation() -> None:
    # Request A: max length 2048, 7 prompt tokens, 1 token generated this iteration, 2 future
    # tokens (final output 3) -> 2 reserved, 2038 never used.
    a = ALLOCATORS.build("contiguous", 256, 16, 2048, reservation="max")
    seq_a = make_seq(list(range(7)), expected_out=3)
    assert len(prefill(a, seq_a)) == 2048 // 16
    seq_a.token_ids.append(7)  # the token generated this iteration (its slot is reserved already)
    rep = a.memory_report()
    assert (rep.token_states, rep.reservation, rep.internal_frag) == (8, 2, 2038)
    assert rep.external_frag == 256 * 16 - 2048 == rep.free_slots
    assert decode(a, seq_a) == []  # within the reservation: nothing new
    # Request B: max length 512, 3 prompt tokens + 1 generated, 1 reserved, 507 never used.
    b = ALLOCATORS.build("contiguous", 64, 16, 512, reservation="max")
    seq_b = make_seq([1, 2, 3], expected_out=2)
    prefill(b, seq_b)
    seq_b.token_ids.append(4)
    rep = b.memory_report()
    assert (rep.token_states, rep.reservation, rep.internal_frag) == (4, 1, 507)


def test_contiguous_reservation_policies_and_overflow() -> None:
    p, o = 161, 338  # the reference's Pow2 example: A = 161 + 512 = 673 -> 43 blocks -> buddy 64
    for reservation, slots, blocks in (("oracle", 499, 32), ("pow2", 673, 43), ("max", 2048, 128)):
        a = ALLOCATORS.build("contiguous", 512, 16, 2048, reservation=reservation, placement="first_fit")
        seq = make_seq(list(range(p)), expected_out=o)
        assert len(prefill(a, seq)) == blocks
        assert a.reserved_slots(seq) == slots
        rep = a.memory_report()
        assert rep.internal_frag == slots - (p + o) if reservation != "oracle" else rep.internal_frag == 0
    buddy = ALLOCATORS.build("contiguous", 512, 16, 2048, reservation="pow2", placement="buddy")
    seq = make_seq(list(range(p)), expected_out=o)
    assert len(prefill(buddy, seq)) == 64  # rounded to a power of two of blocks
    assert buddy.memory_report().external_frag == 512 * 16 - 673
    # Growing past the reservation is "no room", state unchanged.
    oracle = ALLOCATORS.build("contiguous", 64, 4, 64, reservation="oracle")
    seq = make_seq([1, 2, 3], expected_out=2)
    prefill(oracle, seq)
    assert decode(oracle, seq) == [] and decode(oracle, seq) == []
    assert decode(oracle, seq) is None
    oracle.check_invariants()


def test_fig6_block_table_translation() -> None:
    a = ALLOCATORS.build("paged", 8, 4, 64)
    seq = make_seq(list(range(7)), expected_out=4)
    table = prefill(a, seq)
    assert len(table) == 2 and a.block_table(seq) == table
    slots = [table[p // 4] * 4 + p % 4 for p in range(7)]
    assert len(set(slots)) == 7
    assert decode(a, seq) == []  # the 8th token fills the last free slot of block 1
    new = decode(a, seq)  # the 9th needs a third block
    assert new is not None and len(new) == 1 and a.block_table(seq) == table + new
    rep = a.memory_report()
    # 9 tokens in 3 blocks; the request will reach 7 + 4 = 11 tokens: 2 reserved, 1 never used.
    assert (rep.token_states, rep.reservation, rep.internal_frag) == (9, 2, 1)
    assert rep.external_frag == (8 - 3) * 4


def test_fig8_parallel_sampling_copy_on_write() -> None:
    for name in ("paged", "prefix"):
        a = ALLOCATORS.build(name, 8, 4, 64)
        seq_a = make_seq(list(range(7)), expected_out=4, n=2)
        table = prefill(a, seq_a)
        seq_b = seq_a.fork()
        a.fork(seq_a, seq_b)
        assert a.block_table(seq_b) == table
        assert [a.pool.ref[b] for b in table] == [2, 2]
        rep = a.memory_report()
        assert rep.logical_blocks == 4 and rep.physical_blocks == 2 and rep.shared_saved_slots == 8
        new = decode(a, seq_a, 100)  # writes slot 7, inside the shared partial block -> copy it
        assert new is not None and len(new) == 1
        assert new.copies == [(table[1], new[0])]
        assert a.block_table(seq_a) == [table[0], new[0]]
        assert [a.pool.ref[b] for b in table] == [2, 1]
        in_place = decode(a, seq_b, 200)
        assert in_place == [] and list(in_place.copies) == []  # sole owner now: in place
        a.check_invariants()


def test_fig9_beam_fork_and_free() -> None:
    a = ALLOCATORS.build("paged", 16, 4, 64)
    beams = [make_seq(list(range(8)), expected_out=8, n=1)]
    prefill(a, beams[0])
    for _ in range(3):
        child = beams[0].fork()
        a.fork(beams[0], child)
        beams.append(child)
    assert a.pool.ref[a.block_table(beams[0])[0]] == 4
    for b in beams[1:]:
        a.free(b)
    assert a.num_free_blocks() == 16 - 2
    a.free(beams[0])
    assert a.num_free_blocks() == 16
    a.check_invariants()


def test_prefix_hit_and_lru_eviction() -> None:
    shared = list(range(1000, 1200))  # a 200-token shared prefix -> 12 full blocks of 16
    a = ALLOCATORS.build("prefix", 16, 16, 2048)
    s1 = make_seq(shared + [1, 2, 3, 4, 5], expected_out=4, rid="a")
    t1 = prefill(a, s1)
    assert len(t1) == 13
    s2 = make_seq(shared + [9, 9], expected_out=4, rid="b")
    computed = a.get_computed_blocks(s2)
    assert computed == (t1[:12], 192)
    assert a.stats() == {"prefix_query_tokens": 205, "prefix_hit_tokens": 0}  # lookup does not count
    t2 = prefill(a, s2, computed)
    assert t2 == [t1[-1] + 1] and a.block_table(s2)[:12] == t1[:12]
    assert a.stats() == {"prefix_query_tokens": 205 + 202, "prefix_hit_tokens": 192}
    a.check_invariants()
    a.free(s1)
    a.free(s2)
    rep = a.memory_report()
    assert a.num_free_blocks() == 16 and rep.cached_free_slots == 12 * 16
    # The whole prompt is never a hit: an exact 192-token repeat gets 11 blocks.
    assert a.get_computed_blocks(make_seq(shared[:192], 1))[1] == 176
    # Unrelated tokens take the LRU head: the two never-used blocks, then the uncached partial
    # tails (12, 13), then cached prefix blocks -- deepest first, since free() releases a table
    # last block first.
    other = make_seq(list(range(5000, 5000 + 5 * 16)), expected_out=1, rid="c")
    prefill(a, other)
    hit = a.get_computed_blocks(make_seq(shared + [7], 1))
    assert hit[0] == t1[:11]  # the 5th block taken evicted prefix block 11, the chain's tail
    a.check_invariants()
    # Referenced blocks are never evicted: with everything referenced, allocation says no.
    big = make_seq(list(range(9000, 9000 + 13 * 16)), expected_out=1, rid="d")
    assert a.allocate_slots(big, big.num_tokens) is None
    a.check_invariants()
