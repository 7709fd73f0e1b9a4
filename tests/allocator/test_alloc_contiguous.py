"""Contiguous allocator specifics: group reservations, buddy placement, swapping."""

from __future__ import annotations

import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.placement import BuddyPlacement, FirstFitPlacement
from kvlab.request import Request, SamplingParams


def group_seq(n: int, prompt_len: int = 10, out: int = 6, rid: str = "g"):
    req = Request(rid, list(range(prompt_len)), SamplingParams(n=n, max_tokens=out))
    return req.seqs[0]


def test_group_reservation_makes_forks_safe() -> None:
    a = ALLOCATORS.build("contiguous", 12, 4, 16, reservation="oracle", placement="first_fit")
    seq = group_seq(3)  # 10 + 6 = 16 slots = 4 blocks per sequence, 3 runs reserved up front
    assert a.allocate_slots(seq, 10) == [0, 1, 2, 3]
    assert a.num_free_blocks() == 0  # the other two runs are held for the forks
    seq.num_computed_tokens = 10
    intruder = group_seq(1, rid="x")
    assert a.allocate_slots(intruder, 10) is None  # held runs are not up for grabs
    kids = [seq.fork(), seq.fork()]
    copies = [pair for k in kids for pair in a.fork(seq, k)]
    assert a.block_table(kids[0]) == [4, 5, 6, 7] and a.block_table(kids[1]) == [8, 9, 10, 11]
    assert copies == [(0, 4), (1, 5), (2, 6), (0, 8), (1, 9), (2, 10)]  # 10 tokens: 3 blocks
    with pytest.raises(MemoryError):
        a.fork(seq, seq.fork())  # nothing held, nothing free
    a.check_invariants()
    for s in [seq, *kids]:
        a.free(s)
    assert a.num_free_blocks() == 12
    a.check_invariants()


def test_held_runs_released_with_last_sequence() -> None:
    a = ALLOCATORS.build("contiguous", 16, 4, 16, reservation="oracle", placement="first_fit")
    seq = group_seq(4)
    a.allocate_slots(seq, 10)
    assert a.num_free_blocks() == 0
    rep = a.memory_report()
    assert rep.reservation == 16 * 3 + 6 and rep.token_states == 10  # held runs count as reserved
    a.free(seq)  # the request's only live sequence: its held runs go too
    assert a.num_free_blocks() == 16
    a.check_invariants()


def test_buddy_presplit_and_coalesce() -> None:
    b = BuddyPlacement(13, 4)  # 3 max chunks of 4, then 1
    assert b.extents() == [(0, 4), (4, 4), (8, 4), (12, 1)]
    assert b.alloc(3) == (0, 4) and b.alloc(1) == (12, 1) and b.alloc(1) == (4, 1)
    assert b.alloc(2) == (6, 2) and b.alloc(5) is None
    b.free(6, 2)
    b.free(4, 1)
    assert b.extents() == [(4, 4), (8, 4)]  # 4+5 -> 4..5, with 6..7 -> 4..7
    f = FirstFitPlacement(10)
    assert f.alloc(3) == (0, 3) and f.alloc(3) == (3, 3)
    f.free(0, 3)
    assert f.alloc(4) == (6, 4) and f.alloc(2) == (0, 2)
    f.free(3, 3)
    f.free(6, 4)
    assert f.extents() == [(2, 8)] and f.largest_free() == 8


def test_contiguous_swap_roundtrip() -> None:
    a = ALLOCATORS.build("contiguous", 16, 4, 16, num_cpu_blocks=8, reservation="oracle")
    seq = group_seq(2)
    a.allocate_slots(seq, 10)
    seq.num_computed_tokens = 10
    out = a.swap_out([seq])
    assert out == [(0, 0), (1, 1), (2, 2)] and a.num_free_blocks() == 16  # held run released too
    with pytest.raises(ValueError, match="swap_in"):
        a.allocate_slots(seq, 1)  # swapped: swap it in first
    assert a.swap_in([seq]) == [(0, 0), (1, 1), (2, 2)]
    assert a.num_free_blocks() == 8 and a.num_free_cpu_blocks() == 8  # held run re-reserved
    a.fork(seq, seq.fork())  # uses the re-reserved run
    a.check_invariants()


def test_beam_search_prune_then_fork_never_fails() -> None:
    a = ALLOCATORS.build("contiguous", 8, 4, 16, reservation="oracle", placement="first_fit")
    req = Request("beam", list(range(10)), SamplingParams(beam_width=2, max_tokens=6))
    root = req.seqs[0]
    a.allocate_slots(root, 10)
    root.num_computed_tokens = 10
    other = root.fork()
    a.fork(root, other)
    assert a.num_free_blocks() == 0
    a.free(other)  # pruned: its run stays with the request ...
    assert a.allocate_slots(group_seq(1, rid="x"), 4) is None  # ... not given to someone else
    a.fork(root, root.fork())  # so the replacement beam's fork succeeds
    a.check_invariants()


def test_every_allocator_satisfies_the_protocol() -> None:
    from omegaconf import OmegaConf

    from kvlab.allocator import KVAllocator, build_allocator

    for name in ALLOCATORS.names():
        cfg = OmegaConf.create({"name": name, "block_size": 8, "num_blocks": None})
        alloc = build_allocator(cfg, num_blocks=32, max_model_len=64, num_cpu_blocks=4)
        assert isinstance(alloc, KVAllocator) and alloc.block_size == 8
