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


def _corrupt(pool: BlockPool, how: str) -> tuple[dict[int, int], set[int]]:
    """A pool holding blocks 0 (ref 2) and 1 (ref 1), block 2 parked; then break it as ``how`` says.
    Returns the (expected refs, parked) the caller hands to ``check``."""
    for b in (0, 1, 2):
        pool.take(b)
    pool.ref[0] = 2
    pool.ref[2] = 0  # parked: unreferenced, kept out of the queue (an evictable cached block)
    refs, parked = {0: 2, 1: 1}, {2}
    if how == "ref":
        pool.ref[1] = 2
    elif how == "held_block_queued":
        pool.free_queue[1] = None
    elif how == "idle_block_missing":
        del pool.free_queue[5]
    elif how == "parked_block_queued":
        pool.free_queue[2] = None
    elif how == "parked_block_referenced":
        parked.add(1)
    elif how == "foreign_id":
        pool.free_queue[99] = None
        del pool.free_queue[5]
    return refs, parked


@pytest.mark.parametrize("how, message", [
    ("ref", "block 1: ref 2 but held by 1 tables"),
    ("held_block_queued", "block 1: ref 1 but in-free-queue=True"),
    ("idle_block_missing", "block 5: ref 0 but in-free-queue=False"),
    ("parked_block_queued", "both free and parked"),
    ("parked_block_referenced", "a parked block is referenced"),
    ("foreign_id", "outside the pool"),
])
def test_check_catches_every_kind_of_corruption(how, message):
    pool = BlockPool(8)
    refs, parked = _corrupt(pool, "none")
    pool.check(refs, parked)  # the intact pool passes
    pool = BlockPool(8)
    refs, parked = _corrupt(pool, how)
    with pytest.raises(AssertionError, match=message):
        pool.check(refs, parked)


@pytest.mark.parametrize("cls", [BlockPool, FifoBlockPool])
def test_check_catches_a_duplicate_or_negative_id_in_the_queue(cls):
    pool = cls(4)
    pool.pop_free()  # block 0 held
    pool.check({0: 1})
    if cls is FifoBlockPool:  # a deque can queue a block twice
        pool.free_queue.remove(3)
        pool.free_queue.append(1)
        with pytest.raises(AssertionError, match="queued twice"):
            pool.check({0: 1})
    pool = cls(4)
    pool.pop_free()
    if cls is FifoBlockPool:
        pool.free_queue.remove(3)
        pool.free_queue.append(-1)
    else:
        del pool.free_queue[3]
        pool.free_queue[-1] = None
    with pytest.raises(AssertionError, match="outside the pool"):
        pool.check({0: 1})
