"""``allocator.index=radix``: a tree over token ids, SGLang's radix cache at block granularity.

Each cached block is one node whose edge from its parent is the block's token tuple, so a lookup
walks the tree from the root, one dict probe per block, comparing tokens (no hashing step, nothing
kept with the sequence, no collision possible). Blocks live in the pool, so matches are whole
blocks like the hash index; :meth:`RadixIndex.match_tokens` also reports the token-level match a
token-granular radix cache (SGLang with page size 1) would allow: the block match plus the longest
common prefix between the next tokens and any cached child.

Unlike SGLang's tree, nodes are not path-compressed (one block per node): eviction then never
splits a node, and the match cost is the same per block either way (a tuple hash and a probe).
"""

from __future__ import annotations

from kvlab.allocator.index.base import BlockTree
from kvlab.request import Sequence


class RadixIndex(BlockTree):
    """Token tree of cached full blocks. See :class:`BlockTree` for the shared state."""

    name = "radix"

    def match(self, seq: Sequence) -> list[int]:
        bs = self.block_size
        tokens = seq.token_ids
        n = (len(tokens) - 1) // bs
        children = self.children
        kids = self.root
        blocks: list[int] = []
        for chunk in zip(*[iter(tokens[:n * bs])] * bs):  # block tuples, built in C
            b = kids.get(chunk)
            if b is None:
                break
            blocks.append(b)
            kids = children[b]
            if kids is None:
                break
        return blocks

    def match_tokens(self, seq: Sequence) -> int:
        blocks = self.match(seq)
        bs = self.block_size
        tokens = seq.token_ids
        start = len(blocks) * bs
        nxt = tokens[start:min(start + bs, len(tokens) - 1)]
        kids = self.children[blocks[-1]] if blocks else self.root
        best = 0
        for key in kids or ():
            n = 0
            for a, b in zip(key, nxt):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return start + best

    def _edge_keys(self, seq: Sequence, start: int, stop: int) -> list[tuple[int, ...]]:
        bs = self.block_size
        return list(zip(*[iter(seq.token_ids[start * bs:stop * bs])] * bs))
