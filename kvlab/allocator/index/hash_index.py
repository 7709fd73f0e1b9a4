"""``allocator.index=hash``: vLLM-style hash chain over full blocks.

A block's key hashes (parent key, the block's tokens), so one key names the whole prefix and a
lookup is one dict probe per block. The keys of a sequence's full blocks are computed ONCE and
kept with the sequence (``seq.block_hashes``), so admission, registration after allocation and
decode never hash the prompt again.

Hash function (``allocator.hash_fn``):

- ``builtin`` (default): Python's ``hash`` of ``(parent_key, tuple(tokens))``, ~0.3 us per block of
  16 here. 64 bits and not collision-resistant (an adversary can craft collisions), so each cached
  block keeps its token tuple and a hit compares it and the parent block: a collision costs a
  miss, never wrong KV. The check costs ~0.2 us per block on a hit.
- ``sha256``: SHA-256 over (parent digest, the tokens as int64 bytes), ~1.2 us per block of 16
  here (about 4x builtin); collisions are out of reach, so a hit compares only the parent block.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Hashable

from kvlab.allocator.eviction.base import EvictionPolicy
from kvlab.allocator.index.base import BlockTree
from kvlab.request import Sequence


def _builtin(parent: Hashable, tokens: tuple[int, ...]) -> Hashable:
    return hash((parent, tokens))


def _sha256(parent: Hashable, tokens: tuple[int, ...]) -> Hashable:
    return hashlib.sha256(parent + array("q", tokens).tobytes()).digest()  # type: ignore[operator]


HASH_FUNCTIONS: dict[str, tuple[Callable[[Hashable, tuple[int, ...]], Hashable], Hashable]] = {
    "builtin": (_builtin, None),  # (function, key of the empty prefix)
    "sha256": (_sha256, b""),
}


class HashIndex(BlockTree):
    """Hash-chain prefix index: flat map key -> block plus the shared block tree.

    Args:
        num_blocks, block_size, policy: see :class:`BlockTree`.
        hash_fn: ``builtin`` | ``sha256``.
    """

    name = "hash"

    def __init__(self, num_blocks: int, block_size: int, policy: EvictionPolicy, hash_fn: str = "builtin") -> None:
        super().__init__(num_blocks, block_size, policy)
        self.hash_fn = hash_fn
        self._fn, self._empty = HASH_FUNCTIONS[hash_fn]
        self._tag = (hash_fn, block_size)
        self._verify = hash_fn == "builtin"
        self.map: dict[Hashable, int] = {}
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks

    def _hash_list(self, seq: Sequence) -> list[Hashable]:
        """The key list kept with ``seq`` (reset if another hash function or block size made it)."""
        cache = seq.block_hashes
        if cache is None or cache[0] != self._tag:
            hashes: list[Hashable] = []
            seq.block_hashes = (self._tag, hashes)
            return hashes
        return cache[1]

    def block_hashes(self, seq: Sequence, n: int) -> list[Hashable]:
        """Keys of ``seq``'s first ``n`` full blocks, computed once and kept with the sequence
        (extended on demand). Token ids only ever grow, so a kept key stays valid."""
        hashes = self._hash_list(seq)
        have = len(hashes)
        if have < n:
            bs, tokens = self.block_size, seq.token_ids
            parent = hashes[-1] if have else self._empty
            chunks = zip(*[iter(tokens[have * bs:n * bs])] * bs)  # block tuples, built in C
            if self._verify:  # builtin: inlined, this runs once per block of every prompt
                for chunk in chunks:
                    parent = hash((parent, chunk))
                    hashes.append(parent)
            else:
                fn = self._fn
                for chunk in chunks:
                    parent = fn(parent, chunk)
                    hashes.append(parent)
        return hashes

    def match(self, seq: Sequence) -> list[int]:
        bs = self.block_size
        tokens = seq.token_ids
        n = (len(tokens) - 1) // bs
        if n <= 0:
            return []
        get, parent = self.map.get, self.parent
        blocks: list[int] = []
        prev = -1
        if not self._verify:  # sha256: no collision to guard against, compare the parent only
            for h in self.block_hashes(seq, n)[:n]:
                b = get(h)
                if b is None or parent[b] != prev:
                    break
                blocks.append(b)
                prev = b
            return blocks
        # builtin: one pass builds each block's tuple once, hashes it if not yet hashed, and
        # compares it with the cached block's tokens (a hash collision becomes a miss)
        hashes = self._hash_list(seq)
        have = len(hashes)
        stored = self._tokens
        h: Hashable = None
        for j, chunk in enumerate(zip(*[iter(tokens[:n * bs])] * bs)):
            if j < have:
                h = hashes[j]
            else:
                h = hash((h, chunk))
                hashes.append(h)
            b = get(h)
            if b is None or parent[b] != prev or stored[b] != chunk:
                break
            blocks.append(b)
            prev = b
        return blocks

    def _edge_keys(self, seq: Sequence, start: int, stop: int) -> list[Hashable]:
        return self.block_hashes(seq, stop)[start:stop]

    def _registered(self, block: int, key: Hashable, tokens: list[int], j: int) -> None:
        self.map[key] = block
        if self._verify:
            bs = self.block_size
            self._tokens[block] = tuple(tokens[j * bs:(j + 1) * bs])

    def _unregistered(self, block: int, key: Hashable) -> None:
        del self.map[key]
        self._tokens[block] = None

    def check(self, ref: list[int]) -> None:  # type: ignore[override]
        super().check(ref)
        assert len(self.map) == self.num_cached(), "hash map and tree disagree"
        for key, b in self.map.items():
            assert self.edge[b] == key, f"map says block {b} has key {key!r}"
