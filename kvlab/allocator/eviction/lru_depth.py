"""``lru-depth``: deepest (most specific) block first, least recently released among equals.

Depth is the block's position in its prompt (0 = first block). Shallow blocks are the ones many
prompts share (a system prompt, few-shot examples); deep blocks belong to one conversation. This
policy keeps shared prefixes the longest, at the price of evicting a fresh conversation's tail
before a stale short prefix. SGLang's radix cache differs: it evicts only leaves, in order of last
access (LRU over leaves), so depth only orders blocks along one path; kvlab's ``lru`` behaves that
way already (see ``lru.py``), and ``lru-depth`` makes depth the primary key across all paths.
"""

from __future__ import annotations

from kvlab.allocator.eviction import EVICTION
from kvlab.allocator.eviction.base import HeapPolicy


@EVICTION.register("lru-depth")
class LRUDepthPolicy(HeapPolicy):
    """Rank = (-depth, release time). O(log n) per event."""

    name = "lru-depth"

    def key(self, block: int) -> tuple:
        return (-self.depth[block], self.clock)
