"""The physical block pool: per-block reference counts and an LRU free queue.

Every allocator (contiguous, paged, prefix) draws block ids from one :class:`BlockPool`; the same
class serves as the CPU swap pool. Blocks are plain ints ``0 .. num_blocks-1`` and the pool's
state is two flat structures, because the allocator hot paths (one decode token, freeing a
125-block request) run on the engine's critical path every step:

- ``ref``: a ``list[int]`` of reference counts (how many block tables hold each block);
- ``free_queue``: an ``OrderedDict`` used as an ordered set of blocks with ``ref == 0``. Its C
  implementation gives O(1) pop-front (``popitem(last=False)``), push-back and removal from the
  middle (``del``), which the prefix cache needs to take a cached block back out of the queue on
  a hit. A plain ``dict`` would make pop-front degrade (CPython scans the deleted-entry prefix).

The queue is LRU: freed blocks go to the back, allocation pops the front, so the block that has
been free longest (and, for the prefix cache, unreferenced longest) is reused first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import compress
from operator import not_


class BlockPool:
    """``num_blocks`` blocks with reference counts and an LRU queue of the unreferenced ones.

    All methods mutate the pool except :meth:`num_free` and :meth:`check`. The pool does not
    know which table holds a block; allocators keep the tables and call :meth:`incref` /
    :meth:`decref` so that ``ref[b]`` equals the number of tables holding ``b``.

    Args:
        num_blocks: pool size in blocks (>= 0).
    """

    __slots__ = ("num_blocks", "ref", "free_queue")

    def __init__(self, num_blocks: int) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}")
        self.num_blocks = num_blocks
        self.ref: list[int] = [0] * num_blocks
        # Ascending initial order makes the first allocations 0, 1, 2, ... (deterministic).
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    def num_free(self) -> int:
        """Blocks with ``ref == 0`` (for the prefix allocator this includes evictable cached ones)."""
        return len(self.free_queue)

    def pop_free(self) -> int:
        """Take the least recently freed block and give it ``ref = 1``. Raises ``KeyError`` if empty."""
        b = self.free_queue.popitem(last=False)[0]
        self.ref[b] = 1
        return b

    def take(self, b: int) -> None:
        """Take the specific free block ``b`` out of the queue (``ref`` 0 -> 1)."""
        del self.free_queue[b]
        self.ref[b] = 1

    def incref(self, b: int) -> None:
        """One more table holds ``b``; a free (cached) block leaves the queue."""
        if self.ref[b] == 0:
            del self.free_queue[b]
        self.ref[b] += 1

    def decref(self, b: int) -> bool:
        """One table fewer holds ``b``. Returns True when it became free (pushed to the back)."""
        r = self.ref[b] - 1
        self.ref[b] = r
        if r == 0:
            self.free_queue[b] = None
            return True
        if r < 0:
            raise AssertionError(f"block {b}: reference count went negative")
        return False

    def decref_all_reversed(self, blocks: list[int]) -> None:
        """Release a table, last block first, so its tail is the first to be reused/evicted."""
        ref = self.ref
        free = self.free_queue
        for b in reversed(blocks):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                free[b] = None
            elif r < 0:
                raise AssertionError(f"block {b}: reference count went negative")

    def decref_all_reversed_collect(self, blocks: list[int]) -> list[int]:
        """Release a table, last block first, queuing nothing: returns the blocks whose ``ref``
        reached 0, in release order, for the caller to queue (or hand to the prefix index)."""
        ref = self.ref
        zeros = []
        for b in reversed(blocks):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                zeros.append(b)
            elif r < 0:
                raise AssertionError(f"block {b}: reference count went negative")
        return zeros

    def check(self, expected_refs: dict[int, int], parked: set[int] | frozenset[int] = frozenset()) -> None:
        """Assert ``ref`` equals ``expected_refs`` (block -> holders; absent = 0) and that the free
        queue holds exactly the blocks with ``ref == 0`` except ``parked`` ones (unreferenced
        blocks kept elsewhere: the prefix index's evictable set). O(num_blocks), but in C-level
        list and set operations: the engine runs it after every step under
        ``KVLAB_CHECK_INVARIANTS`` (the whole test suite), on pools of up to ~10^5 blocks."""
        n, ref = self.num_blocks, self.ref
        assert len(ref) == n
        refs = expected_refs if 0 not in expected_refs.values() else {b: c for b, c in expected_refs.items() if c}
        # ref == expected: the held blocks carry their counts and no other block is referenced
        in_range = not refs or (min(refs) >= 0 and max(refs) < n)
        zeros = ref.count(0)
        if not in_range or list(map(ref.__getitem__, refs)) != list(refs.values()) or n - zeros != len(refs):
            b = next(i for i in sorted(set(range(n)) | set(refs)) if (ref[i] if 0 <= i < n else None) != refs.get(i, 0))
            raise AssertionError(f"block {b}: ref {ref[b] if 0 <= b < n else None} but held by {refs.get(b, 0)} tables")
        # the free queue holds exactly the unreferenced, unparked blocks: (no duplicates,) none of
        # them referenced or parked, and as many as there are such blocks (C-level passes only)
        fq = self.free_queue
        try:
            ok = (len(fq) == zeros - len(parked) and not any(map(ref.__getitem__, parked))
                  and not any(map(ref.__getitem__, fq)) and not any(map(fq.__contains__, parked))
                  and (not fq or min(fq) >= 0))
        except (IndexError, TypeError):  # an id outside the pool
            ok = False
        if ok and not isinstance(fq, dict):
            ok = len(set(fq)) == len(fq)
        if not ok:
            self._explain_free_queue(parked)

    def _explain_free_queue(self, parked: set[int] | frozenset[int]) -> None:
        """Raise the first inconsistency between the free queue, ``ref`` and ``parked`` (the slow
        path of :meth:`check`, taken only when it found one)."""
        n, ref = self.num_blocks, self.ref
        free = set(self.free_queue)
        assert len(free) == len(self.free_queue), "a block is queued twice"
        assert not (free & parked), "a block is both free and parked"
        idle = set(compress(range(n), map(not_, ref)))
        assert idle.issuperset(parked), "a parked block is referenced"
        idle -= parked
        if free - idle:
            b = min(free - idle)
            if not 0 <= b < n:
                raise AssertionError(f"a block id outside the pool is queued: {b}")
            raise AssertionError(f"block {b}: ref {ref[b]} but in-free-queue=True")
        raise AssertionError(f"block {min(idle - free)}: ref 0 but in-free-queue=False")


class FifoBlockPool(BlockPool):
    """A :class:`BlockPool` whose free queue is a ``deque``: same LRU order, no removal from the
    middle (so no :meth:`take`/reviving :meth:`incref`). Used where blocks are never taken back
    out of the queue (paged without prefix cache, CPU swap pools): ``deque.popleft``/``extend``
    are cheaper than the ``OrderedDict`` node bookkeeping, which matters for freeing long tables.
    """

    __slots__ = ()

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.free_queue = deque(range(num_blocks))  # type: ignore[assignment]

    def pop_free(self) -> int:
        b = self.free_queue.popleft()  # type: ignore[attr-defined]
        self.ref[b] = 1
        return b

    def take(self, b: int) -> None:
        raise RuntimeError("FifoBlockPool cannot take a block out of the middle of its queue")

    def incref(self, b: int) -> None:
        if self.ref[b] == 0:
            raise RuntimeError("FifoBlockPool cannot revive a free block")
        self.ref[b] += 1

    def decref(self, b: int) -> bool:
        r = self.ref[b] - 1
        self.ref[b] = r
        if r == 0:
            self.free_queue.append(b)  # type: ignore[attr-defined]
            return True
        if r < 0:
            raise AssertionError(f"block {b}: reference count went negative")
        return False

    def decref_all_reversed(self, blocks: list[int]) -> None:
        self.free_queue.extend(self.decref_all_reversed_collect(blocks))  # type: ignore[attr-defined]
