"""Releasing a block table from the block pool: order, reference counts, the negative-count guard."""

from __future__ import annotations

import pytest

from kvlab.allocator.block_pool import BlockPool, FifoBlockPool


@pytest.mark.parametrize("cls", [BlockPool, FifoBlockPool])
def test_collect_returns_freed_blocks_last_first_and_queues_nothing(cls):
    pool = cls(6)
    table = [pool.pop_free() for _ in range(4)]  # 0, 1, 2, 3
    pool.ref[1] += 1  # a second holder (e.g. a fork) keeps block 1
    queued = list(pool.free_queue)
    assert pool.decref_all_reversed_collect(table) == [3, 2, 0]
    assert list(pool.free_queue) == queued == [4, 5]
    assert pool.ref[:4] == [0, 1, 0, 0]


@pytest.mark.parametrize("cls", [BlockPool, FifoBlockPool])
def test_decref_all_reversed_queues_the_tail_first(cls):
    pool = cls(5)
    table = [pool.pop_free() for _ in range(3)]
    pool.decref_all_reversed(table)
    assert list(pool.free_queue) == [3, 4, 2, 1, 0]
    pool.check({})


@pytest.mark.parametrize("cls", [BlockPool, FifoBlockPool])
def test_releasing_a_free_block_is_an_error(cls):
    pool = cls(2)
    with pytest.raises(AssertionError, match="block 1: reference count went negative"):
        pool.decref_all_reversed_collect([1])
