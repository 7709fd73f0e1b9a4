"""``fifo``: the block cached first is evicted first, however often it was hit since.

The smallest complete policy: copy this file, change the name and :meth:`FIFOPolicy.key`, and
``allocator.eviction=<name>`` and ``python -m kvlab.replay`` know it. FIFO evicts a parent before
its children (it is older); the index then drops the now unreachable children with it.
"""

from __future__ import annotations

import itertools

from kvlab.allocator.eviction import EVICTION
from kvlab.allocator.eviction.base import HeapPolicy


@EVICTION.register("fifo")
class FIFOPolicy(HeapPolicy):
    """Rank = insertion order. O(log n) per event."""

    name = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self._born: dict[int, int] = {}
        self._counter = itertools.count()

    def inserted(self, block: int, depth: int) -> None:
        self._born[block] = next(self._counter)

    def key(self, block: int) -> tuple:
        return (self._born[block],)

    def _forget(self, block: int) -> None:
        self._born.pop(block, None)
