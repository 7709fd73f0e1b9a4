"""The eviction-policy contract and a lazy-deletion heap that most policies share.

A policy sees one event stream from the prefix index (or from the replay simulator) and owns the
*evictable set*: cached blocks no running sequence holds. The free queue of never-cached blocks is
elsewhere (the block pool); a policy never sees it. Blocks are plain ints.

Events, in the order a block lives them: ``inserted`` (a new cached block, held by the sequence
that wrote it, so not evictable) -> ``unlocked`` (its last holder released it: evictable) ->
``locked`` (a prefix hit takes it again: not evictable) -> ... -> ``victim`` (the policy chose it)
or ``dropped`` (it left the cache another way: a cascaded descendant of a victim).
"""

from __future__ import annotations

import heapq
from typing import Protocol, runtime_checkable


@runtime_checkable
class EvictionPolicy(Protocol):
    """Chooses victims among unreferenced cached blocks. Every method mutates the policy.

    ``name`` is the registry name. All methods are O(1) or O(log n) in the number of cached
    blocks (the eviction benchmark checks that the cost is flat from 10^3 to 10^5 blocks).
    """

    name: str

    def inserted(self, block: int, depth: int) -> None:
        """``block`` joined the cache at ``depth`` (0 = first block of a prompt); it is held."""
        ...

    def locked(self, block: int) -> None:
        """An evictable ``block`` is in use again (a prefix hit): it leaves the evictable set."""
        ...

    def unlocked(self, block: int) -> None:
        """``block``'s last holder released it: it joins the evictable set."""
        ...

    def unlocked_many(self, blocks: list[int]) -> None:
        """``unlocked`` for each of ``blocks``, in order (one call per released table)."""
        ...

    def victim(self) -> int:
        """Choose a block, remove it from the evictable set and forget it. ``IndexError`` if empty."""
        ...

    def dropped(self, block: int) -> None:
        """``block`` left the cache without being chosen (evictable or not): forget it."""
        ...

    def __len__(self) -> int:
        """Number of evictable blocks."""
        ...


class HeapPolicy:
    """Base for policies that rank evictable blocks by a key (smallest evicted first).

    Subclasses implement :meth:`key`; the heap keeps stale entries (lazy deletion) and is rebuilt
    when more than half of it is stale, so every operation is O(log n) amortized. ``clock`` counts
    lock/unlock events (a logical time for recency).
    """

    name = "heap"

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._live: dict[int, tuple] = {}  # evictable block -> its current heap key
        self.depth: dict[int, int] = {}  # cached block -> depth
        self.clock = 0

    def key(self, block: int) -> tuple:
        """Rank of an evictable block; the smallest is evicted first. Called when it is unlocked."""
        raise NotImplementedError

    def inserted(self, block: int, depth: int) -> None:
        self.depth[block] = depth

    def locked(self, block: int) -> None:
        self.clock += 1
        del self._live[block]

    def unlocked(self, block: int) -> None:
        self.clock += 1
        k = self.key(block)
        self._live[block] = k
        heapq.heappush(self._heap, (k, block))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(k, b) for b, k in self._live.items()]
            heapq.heapify(self._heap)

    def unlocked_many(self, blocks: list[int]) -> None:
        for b in blocks:
            self.unlocked(b)

    def victim(self) -> int:
        heap, live = self._heap, self._live
        while True:
            k, b = heapq.heappop(heap)  # IndexError when empty
            if live.get(b) == k:
                del live[b]
                self._forget(b)
                return b

    def dropped(self, block: int) -> None:
        self._live.pop(block, None)
        self._forget(block)

    def _forget(self, block: int) -> None:
        self.depth.pop(block, None)

    def __len__(self) -> int:
        return len(self._live)
