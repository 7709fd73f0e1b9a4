"""``lru``: least recently released first — vLLM's free-queue order, O(1).

An ordered set of evictable blocks: a released block goes to the back, a hit takes it out, the
front is the victim. The allocator releases a table last block first, so within one release the
deepest block goes first; since every holder of a block also holds its parent, a parent is always
behind its children and LRU never strands a child (it evicts leaves, like SGLang's leaf LRU).
"""

from __future__ import annotations

from collections import OrderedDict

from kvlab.allocator.eviction import EVICTION


@EVICTION.register("lru")
class LRUPolicy:
    """Least recently released first. Every method is O(1) (an ``OrderedDict``)."""

    name = "lru"

    def __init__(self) -> None:
        self._queue: OrderedDict[int, None] = OrderedDict()

    def inserted(self, block: int, depth: int) -> None:
        pass  # a new block is held (not evictable) and LRU ranks by release order only: nothing to record

    def locked(self, block: int) -> None:
        del self._queue[block]

    def unlocked(self, block: int) -> None:
        self._queue[block] = None

    def unlocked_many(self, blocks: list[int]) -> None:
        self._queue.update(dict.fromkeys(blocks))

    def victim(self) -> int:
        try:
            return self._queue.popitem(last=False)[0]
        except KeyError:
            raise IndexError("no evictable block") from None

    def dropped(self, block: int) -> None:
        self._queue.pop(block, None)

    def __len__(self) -> int:
        return len(self._queue)
