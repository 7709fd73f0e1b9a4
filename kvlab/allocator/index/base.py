"""The prefix-index contract and the block tree both indexes share.

A prefix index knows which FULL blocks of the pool hold KV that a later prompt can reuse. It does
not own the blocks (the block pool does) and never touches reference counts; the paged allocator
tells it what happens:

- ``match(seq)``: longest chain of cached blocks equal to ``seq``'s leading tokens (pure);
- ``insert(seq, table, start, stop)``: blocks ``table[start:stop]`` became full;
- ``lock(b)`` / ``unlock(b)``: cached block ``b`` is held again by a sequence / no longer held;
- ``evict()``: choose a victim among unreferenced cached blocks (the :mod:`eviction policy
  <kvlab.allocator.eviction>` decides) and return the blocks that left the cache.

Cached blocks form a tree: a block's parent is the cached block holding the tokens just before
it. A block is cached only if the table that fills it holds its parent as a *cached* block, so
every holder of a cached block also holds all its cached ancestors: an unreferenced block has no
referenced descendant, and dropping a victim's subtree with it never strands a running sequence.
The evictable set (inside the policy) and the pool's free queue (never-cached blocks) are separate
structures; the allocator takes free blocks first and evicts only when the free queue is empty.
"""

from __future__ import annotations

from collections.abc import Hashable
from collections.abc import Sequence as Seq
from typing import Protocol, runtime_checkable

from kvlab.allocator.eviction.base import EvictionPolicy
from kvlab.request import Sequence

ROOT = -1


@runtime_checkable
class PrefixIndex(Protocol):
    """What the paged allocator asks of a prefix index. Block ids are the pool's ints."""

    name: str
    block_size: int
    policy: EvictionPolicy

    def match(self, seq: Sequence) -> list[int]:
        """Cached blocks equal to ``seq``'s first tokens, at most ``(num_tokens - 1) // block_size``
        of them (the last token is always computed). Does not mutate the index; the hash index may
        extend the hash list kept with the sequence (``seq.block_hashes``)."""
        ...

    def match_tokens(self, seq: Sequence) -> int:
        """Tokens a token-granular cache could reuse (radix: block match + the common prefix with
        a cached child; hash: the block match). Does not mutate."""
        ...

    def insert(self, seq: Sequence, table: Seq[int], start: int, stop: int) -> None:
        """Blocks ``table[start:stop]`` of ``seq`` are now full: cache those whose prefix is new and
        whose parent ``table[j-1]`` is cached (first writer wins). Mutates."""
        ...

    def lock(self, block: int) -> None:
        """Cached ``block`` had no holder and now has one (a hit): it stops being evictable."""
        ...

    def unlock(self, block: int) -> None:
        """Cached ``block`` lost its last holder: it becomes evictable."""
        ...

    def unlock_many(self, blocks: list[int]) -> list[int]:
        """``blocks`` (in release order) lost their last holder: the cached ones become evictable
        (in that order); returns the others, which belong in the free queue."""
        ...

    def evict(self) -> list[int]:
        """Remove the policy's victim and its cached descendants; returns them, victim first.
        ``IndexError`` when nothing is evictable."""
        ...

    def is_cached(self, block: int) -> bool: ...

    def num_evictable(self) -> int: ...

    def num_cached(self) -> int: ...

    def cached_block_ids(self) -> list[int]:
        """Ids of every block in the index, referenced or not (O(pool); for views, not hot paths)."""
        ...

    def check(self, ref: Seq[int]) -> None:
        """Assert the tree is consistent with the reference counts ``ref`` (tests only, O(pool))."""
        ...


class BlockTree:
    """Block tree + eviction bookkeeping; subclasses define the lookup (:meth:`match`) and the
    key under which a block hangs from its parent (:meth:`_edge_keys`).

    Per block (flat lists indexed by block id): ``edge`` (its key in the parent's children, ``None``
    = not cached), ``parent`` (``ROOT`` for a prompt's first block), ``depth`` and ``children``
    (dict key -> block, ``None`` while childless). Every method except the queries mutates.

    Args:
        num_blocks: pool size.
        block_size: tokens per block.
        policy: the eviction policy that owns the evictable set.
    """

    name = "tree"

    def __init__(self, num_blocks: int, block_size: int, policy: EvictionPolicy) -> None:
        self.block_size = block_size
        self.policy = policy
        self.edge: list[Hashable | None] = [None] * num_blocks
        self.parent: list[int] = [ROOT] * num_blocks
        self.depth: list[int] = [0] * num_blocks
        self.children: list[dict | None] = [None] * num_blocks
        self.root: dict = {}
        self._num_cached = 0

    # ------------------------------------------------------------------ lookup (subclasses)
    def match(self, seq: Sequence) -> list[int]:
        raise NotImplementedError

    def match_tokens(self, seq: Sequence) -> int:
        return len(self.match(seq)) * self.block_size

    def _edge_keys(self, seq: Sequence, start: int, stop: int) -> list[Hashable]:
        raise NotImplementedError

    def _registered(self, block: int, key: Hashable, tokens: list[int], j: int) -> None:
        """``block`` (block ``j`` of ``tokens``) was cached under ``key`` (the hash index adds it
        to its flat map)."""

    def _unregistered(self, block: int, key: Hashable) -> None:
        """``block`` left the cache."""

    # ------------------------------------------------------------------ mutation
    def insert(self, seq: Sequence, table: Seq[int], start: int, stop: int) -> None:
        if stop <= start:
            return
        keys = self._edge_keys(seq, start, stop)
        edge, children, depth = self.edge, self.children, self.depth
        policy = self.policy
        for j in range(start, stop):
            b = table[j]
            if edge[b] is not None:
                continue  # already cached (a hit, or a forked sibling registered it)
            if j == 0:
                p, kids, d = ROOT, self.root, 0
            else:
                p = table[j - 1]
                if edge[p] is None:
                    continue  # parent private (another block caches that prefix): ours stays private
                kids = children[p]
                if kids is None:
                    kids = children[p] = {}
                d = depth[p] + 1
            k = keys[j - start]
            if k in kids:
                continue  # first writer wins: an equal block is cached already
            kids[k] = b
            edge[b] = k
            self.parent[b] = p
            depth[b] = d
            self._num_cached += 1
            self._registered(b, k, seq.token_ids, j)
            policy.inserted(b, d)

    def lock(self, block: int) -> None:
        self.policy.locked(block)

    def unlock(self, block: int) -> None:
        self.policy.unlocked(block)

    def unlock_many(self, blocks: list[int]) -> list[int]:
        edge = self.edge
        cached = [b for b in blocks if edge[b] is not None]
        if len(cached) == len(blocks):
            self.policy.unlocked_many(blocks)
            return []
        self.policy.unlocked_many(cached)
        return [b for b in blocks if edge[b] is None]

    def evict(self) -> list[int]:
        v = self.policy.victim()
        p = self.parent[v]
        siblings = self.root if p == ROOT else self.children[p]
        del siblings[self.edge[v]]  # type: ignore[arg-type, index]
        out = [v]
        stack = [v]
        edge, children, policy = self.edge, self.children, self.policy
        while stack:
            x = stack.pop()
            kids = children[x]
            if kids:
                for c in kids.values():
                    policy.dropped(c)  # unreachable once its ancestor is gone
                    out.append(c)
                    stack.append(c)
            children[x] = None
            self._unregistered(x, edge[x])  # type: ignore[arg-type]
            edge[x] = None
        self._num_cached -= len(out)
        return out

    # ------------------------------------------------------------------ queries
    def is_cached(self, block: int) -> bool:
        return self.edge[block] is not None

    def num_evictable(self) -> int:
        return len(self.policy)

    def num_cached(self) -> int:
        return self._num_cached

    def cached_block_ids(self) -> list[int]:
        return [b for b, k in enumerate(self.edge) if k is not None]

    def check(self, ref: Seq[int]) -> None:
        cached = [b for b, k in enumerate(self.edge) if k is not None]
        assert len(cached) == self._num_cached, f"cached count {self._num_cached} != {len(cached)}"
        for b in cached:
            p = self.parent[b]
            kids = self.root if p == ROOT else self.children[p]
            assert p == ROOT or self.edge[p] is not None, f"block {b}: parent {p} not cached"
            assert kids is not None and kids.get(self.edge[b]) == b, f"block {b} not under its parent {p}"
            assert self.depth[b] == (0 if p == ROOT else self.depth[p] + 1), f"block {b}: depth"
            if ref[b] > 0 and p != ROOT:
                assert ref[p] > 0, f"block {b} is held but its cached parent {p} is not"
        for b, kids in enumerate(self.children):
            assert not kids or self.edge[b] is not None, f"uncached block {b} has children"
        unheld = sum(1 for b in cached if ref[b] == 0)
        assert unheld == len(self.policy), f"{unheld} unreferenced cached blocks, policy has {len(self.policy)}"
