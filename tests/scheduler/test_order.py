"""Which request runs when: FCFS order and its token budget, LPM order, static batches, with the
block ids each one gets pinned (the paged pool hands out 0, 1, 2, ... first, then LRU)."""

from __future__ import annotations

import pytest
from helpers import chunk_ids, ids, make, req, step, table


def test_fcfs_admits_in_arrival_order_and_pins_blocks():
    s = make(num_blocks=8)
    r0, r1, r2 = req("r0", [1] * 5, t=0.0), req("r1", [2] * 3, t=1.0), req("r2", [3] * 6, t=2.0)
    for r in (r2, r0, r1):  # queue order is add order; FCFS keeps it
        s.add_request(r)
    out, _ = step(s)
    assert chunk_ids(out) == [("r2", 6), ("r0", 5), ("r1", 3)]
    assert out.num_prefill_tokens == 14 and out.num_decode_tokens == 0
    assert (table(s, r2), table(s, r0), table(s, r1)) == ([0, 1], [2, 3], [4])
    assert ids(s.running) == ["r0", "r1", "r2"]  # running is kept in arrival order
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 1), ("r1", 1), ("r2", 1)] and out.num_decode_tokens == 3
    assert (table(s, r2), table(s, r0), table(s, r1)) == ([0, 1], [2, 3], [4])  # slots were there


def test_fcfs_token_budget_chunks_the_prompt_that_does_not_fit():
    s = make(num_blocks=8, max_num_batched_tokens=8)
    r0, r1, r2 = req("r0", [1] * 5, t=0), req("r1", [2] * 6, t=1), req("r2", [3] * 2, t=2)
    for r in (r0, r1, r2):
        s.add_request(r)
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 5), ("r1", 3)] and ids(s.waiting) == ["r2"]
    assert table(s, r1) == [2]  # 3 tokens: one block so far
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 1), ("r1", 3), ("r2", 2)]
    assert (table(s, r1), table(s, r2)) == ([2, 3], [4])


def test_lpm_admits_the_longest_cached_prefix_first():
    s = make("lpm", "prefix", num_blocks=32)
    warm = req("warm", list(range(1, 13)), max_tokens=1)  # 3 full blocks get cached
    s.add_request(warm)
    _, fin = step(s)
    assert ids(fin) == ["warm"]
    b = req("B", list(range(50, 62)), t=1)  # no shared prefix
    c = req("C", list(range(1, 13)) + [99], t=2)  # 12 cached tokens
    d = req("D", list(range(1, 5)) + list(range(70, 78)), t=3)  # 4 cached tokens
    for r in (b, c, d):
        s.add_request(r)
    out, _ = step(s)
    assert chunk_ids(out) == [("C", 1), ("D", 8), ("B", 12)]
    assert (c.num_cached_tokens, d.num_cached_tokens, b.num_cached_tokens) == (12, 4, 0)
    assert table(s, c)[:3] == table(s, d)[:1] + table(s, c)[1:3]  # C and D share the first block


def test_fcfs_ignores_the_prefix_cache_when_ordering():
    s = make("fcfs", "prefix", num_blocks=32)
    s.add_request(req("warm", list(range(1, 13)), max_tokens=1))
    step(s)
    for r in (req("B", list(range(50, 62)), t=1), req("C", list(range(1, 13)) + [99], t=2)):
        s.add_request(r)
    out, _ = step(s)
    assert chunk_ids(out) == [("B", 12), ("C", 1)]


def test_static_batch_runs_to_completion_before_the_next_forms():
    s = make("static", "paged", num_blocks=16, max_batch_size=2)
    r0, r1, r2 = req("r0", [1] * 4, max_tokens=1, t=0), req("r1", [2] * 4, max_tokens=3, t=1), req("r2", [3] * 4, t=2)
    for r in (r0, r1, r2):
        s.add_request(r)
    out, fin = step(s)
    assert chunk_ids(out) == [("r0", 4), ("r1", 4)] and ids(fin) == ["r0"]
    out, fin = step(s)  # r0 is done, but r2 may not join the running batch
    assert chunk_ids(out) == [("r1", 1)] and ids(s.waiting) == ["r2"]
    out, fin = step(s)
    assert chunk_ids(out) == [("r1", 1)] and ids(fin) == ["r1"]
    out, _ = step(s)
    assert chunk_ids(out) == [("r2", 4)]


@pytest.mark.parametrize("scheduler", ["fcfs", "lpm", "static"])
def test_a_request_that_can_never_fit_is_refused_at_add_request(scheduler):
    s = make(scheduler, num_blocks=4)  # 16 token slots
    with pytest.raises(ValueError, match=r"needs up to 5 blocks, but the pool holds 4 blocks of 4 tokens"):
        s.add_request(req("big", [1] * 10, max_tokens=10))
    with pytest.raises(ValueError, match=r"n=2"):
        s.add_request(req("pair", [1] * 4, max_tokens=12, n=2))
    assert not s.has_unfinished_requests()
    s.add_request(req("ok", [1] * 10, max_tokens=6))  # exactly 16 tokens: fits
    assert ids(s.waiting) == ["ok"]
