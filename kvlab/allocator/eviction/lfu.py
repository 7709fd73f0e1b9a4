"""``lfu``: fewest uses first, least recently released among equals (SGLang's LFU key).

A block's use count starts at 1 when it is cached and grows by one per prefix hit. A parent is
used at least as often as its children, and on a tie the later-released parent loses to the child,
so LFU also evicts leaves first.
"""

from __future__ import annotations

from kvlab.allocator.eviction import EVICTION
from kvlab.allocator.eviction.base import HeapPolicy


@EVICTION.register("lfu")
class LFUPolicy(HeapPolicy):
    """Rank = (uses, release time). O(log n) per event."""

    name = "lfu"

    def __init__(self) -> None:
        super().__init__()
        self._uses: dict[int, int] = {}

    def inserted(self, block: int, depth: int) -> None:
        self._uses[block] = 1

    def locked(self, block: int) -> None:
        super().locked(block)
        self._uses[block] += 1

    def key(self, block: int) -> tuple:
        return (self._uses[block], self.clock)

    def _forget(self, block: int) -> None:
        self._uses.pop(block, None)
