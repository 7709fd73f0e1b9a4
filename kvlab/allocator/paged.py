"""The paged allocator (vLLM's PagedAttention block manager): any free block, shared on fork,
optionally shared across requests through a prefix index.

Owns the per-sequence block tables over one block pool, copy-on-write of shared partial blocks,
swapping whole sequence groups to the CPU pool, and the paged memory report. Prefix sharing is
composition, not inheritance: pass ``index=`` a :class:`~kvlab.allocator.index.base.PrefixIndex`
(``None`` = no sharing). The pool's free queue holds never-cached (or evicted) blocks; the
index's eviction policy holds the evictable set (cached, unreferenced blocks). Allocation takes
the free queue first and asks the index to evict only when it is empty.
"""

from __future__ import annotations

from collections import Counter

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.base import NO_NEW_BLOCKS, MemoryReport, NewBlocks
from kvlab.allocator.block_pool import FifoBlockPool
from kvlab.allocator.index.base import PrefixIndex
from kvlab.allocator.options import cdiv, check_options, validate_geometry
from kvlab.allocator.paged_report import paged_memory_report
from kvlab.allocator.table_queries import BlockTableQueries
from kvlab.request import Sequence


@ALLOCATORS.register("paged")
class PagedAllocator(BlockTableQueries):
    """vLLM-style paged KV allocation: a sequence's blocks may be anywhere in the pool.

    ``allocate_slots`` grows a table one block at a time; ``fork`` shares every block of the
    parent (ref +1); a write into a block whose ref > 1 first copies it into a fresh block
    (copy-on-write, returned as ``(src, dst)`` pairs in the result's ``copies``). ``None`` from
    ``allocate_slots`` / ``swap_*`` means "no room" and leaves every structure untouched.

    With an ``index``: :meth:`get_computed_blocks` returns the index's longest cached chain of
    full blocks (capped so the last token is computed); ``allocate_slots(..., computed=)`` attaches
    it (a cached unreferenced block is locked: it leaves the evictable set) and counts
    ``prefix_query_tokens`` / ``prefix_hit_tokens``; blocks that become full are inserted; a
    released cached block is unlocked (evictable) instead of going to the free queue;
    ``num_free_blocks()`` counts free + evictable blocks.

    Args:
        num_blocks: GPU blocks in the pool.
        block_size: token slots per block, 1..256.
        max_model_len: longest sequence in tokens (caps the expected final length in reports).
        num_cpu_blocks: CPU swap pool size in blocks (0 disables swapping: ``swap_out`` -> None).
        index: the prefix index (built with the same ``num_blocks`` and ``block_size``), or
            ``None`` for no sharing across requests. The allocator mutates it.

    Nothing is random: the same operations give the same block ids.
    """

    OPTIONS: dict[str, tuple[str, ...]] = {}
    name = "paged"

    def __init__(self, num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
                 num_cpu_blocks: int = 0, *, index: PrefixIndex | None = None, **options: object) -> None:
        validate_geometry(num_blocks, block_size, max_model_len, num_cpu_blocks)
        self.options = check_options(self.name, options, self.OPTIONS)
        if isinstance(index, str):
            raise ValueError(f"allocator 'paged': index={index!r} is not an index object; for prefix sharing by "
                             "name use allocator=prefix allocator.index=hash|radix")
        if index is not None and index.block_size != block_size:
            raise ValueError(f"index block_size {index.block_size} != allocator block_size {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.index = index
        # Never-cached free blocks only (the evictable set is the index's): no removal from the
        # middle, so a deque suffices with or without an index.
        self.pool = FifoBlockPool(num_blocks)
        self.cpu_pool = FifoBlockPool(num_cpu_blocks)
        self._num_registered: dict[int, int] = {}  # seq_id -> leading blocks offered to the index
        self._tables: dict[int, list[int]] = {}  # seq_id -> GPU block ids, logical order
        self._seqs: dict[int, Sequence] = {}  # seq_id -> sequence, for the memory report
        self._swapped: dict[int, list[int]] = {}  # seq_id -> CPU block ids
        self._logical_blocks = 0  # sum of table lengths, kept incrementally (report is O(#seqs))
        self._query_tokens = 0
        self._hit_tokens = 0

    # ---------------------------------------------------------------- queries (no mutation)
    def stats(self) -> dict[str, int]:
        return {"prefix_query_tokens": self._query_tokens, "prefix_hit_tokens": self._hit_tokens}

    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        """Longest cached prefix (full blocks, never the last token); ``([], 0)`` without an index."""
        if self.index is None:
            return [], 0
        blocks = self.index.match(seq)
        return blocks, len(blocks) * self.block_size

    def num_free_blocks(self) -> int:
        """Free blocks plus evictable cached blocks."""
        index = self.index
        return len(self.pool.free_queue) + (index.num_evictable() if index is not None else 0)

    def cached_block_ids(self) -> list[int]:
        """Blocks the prefix index holds, referenced or not (empty without an index; O(pool))."""
        return self.index.cached_block_ids() if self.index is not None else []

    def num_cached_free_blocks(self) -> int:
        """Cached blocks no sequence holds (evictable); 0 without an index."""
        return self.index.num_evictable() if self.index is not None else 0

    # ---------------------------------------------------------------- allocation
    def allocate_slots(self, seq: Sequence, num_new_tokens: int,
                       computed: tuple[list[int], int] | None = None) -> NewBlocks | None:
        """Cover ``num_computed_tokens + computed tokens + num_new_tokens`` tokens (see base.py).

        Returns the newly allocated block ids (copy-on-write destinations included), ``[]`` when
        the table already covers them, or ``None`` (state unchanged) when the pool lacks room.
        """
        table = self._tables.get(seq.seq_id)
        if table is not None and not computed:
            # Fast path (every decode step but one per block): the slots exist and no block being
            # written is shared, so there is nothing to do.
            start = seq.num_computed_tokens
            total = start + num_new_tokens
            bs = self.block_size
            if total <= len(table) * bs:
                ref = self.pool.ref
                i = start // bs
                last = -(-total // bs)  # cdiv, inlined: this path runs once per decode token
                while i < last and ref[table[i]] == 1:
                    i += 1
                if i >= last:
                    if self.index is not None:  # skip a no-op call on the paged hot path
                        self._after_allocate(seq, table, total)
                    return NO_NEW_BLOCKS
        return self._allocate(seq, num_new_tokens, computed)

    def _allocate(self, seq: Sequence, num_new_tokens: int,
                  computed: tuple[list[int], int] | None) -> NewBlocks | None:
        bs = self.block_size
        pool = self.pool
        sid = seq.seq_id
        table = self._tables.get(sid)
        cblocks, ctokens = computed if computed else ([], 0)
        if cblocks and table:
            raise ValueError(f"seq {sid}: a computed prefix can only be attached to an empty table")
        if ctokens != len(cblocks) * bs:
            raise ValueError(f"computed tokens {ctokens} != {len(cblocks)} full blocks of {bs}")
        if table is None and sid in self._swapped:
            raise ValueError(f"seq {sid} is swapped out: swap_in before allocating")
        cur = table if table is not None else []
        held = len(cur) + len(cblocks)
        start = seq.num_computed_tokens + ctokens
        total = start + num_new_tokens
        needed = cdiv(total, bs)
        num_new = max(0, needed - held)
        # Existing blocks that will be written but are shared: copy-on-write them.
        ref = pool.ref
        cow = [i for i in range(start // bs, min(needed, len(cur))) if ref[cur[i]] > 1]
        revive = sum(1 for b in cblocks if ref[b] == 0)  # cached blocks leaving the evictable set
        if num_new + len(cow) + revive > self.num_free_blocks():
            return None
        is_new = table is None
        if table is None:
            table = self._tables[sid] = []
            self._seqs[sid] = seq
            if self.index is not None:
                self._num_registered[sid] = len(cblocks)  # hit blocks are cached already
        if cblocks:
            index = self.index
            for b in cblocks:
                if ref[b] == 0:
                    index.lock(b)  # type: ignore[union-attr]
                ref[b] += 1
        table.extend(cblocks)
        new_blocks = NewBlocks()
        if cow:
            new_blocks.copies = []
        for i in cow:
            src = table[i]
            dst = self._pop()
            pool.decref(src)  # ref > 1, so it stays with its other holders
            table[i] = dst
            new_blocks.copies.append((src, dst))  # type: ignore[union-attr]
            new_blocks.append(dst)
        for _ in range(num_new):
            b = self._pop()
            table.append(b)
            new_blocks.append(b)
        self._logical_blocks += len(cblocks) + num_new
        if self.index is not None:
            if is_new:
                self._query_tokens += seq.num_tokens
                self._hit_tokens += ctokens
            self._after_allocate(seq, table, total)
        return new_blocks

    def _pop(self) -> int:
        """A free block with ref 1; evicts through the index when the free queue is empty."""
        pool = self.pool
        if not pool.free_queue:
            victims = self.index.evict()  # type: ignore[union-attr]  # callers checked num_free_blocks
            ref = pool.ref
            pool.free_queue.extend(v for v in victims if ref[v] == 0)
        return pool.pop_free()

    def _after_allocate(self, seq: Sequence, table: list[int], covered_tokens: int) -> None:
        """Offer the blocks that became full to the index (each block once per table)."""
        sid = seq.seq_id
        num_full = min(covered_tokens, len(seq.token_ids)) // self.block_size
        done = self._num_registered[sid]
        if num_full > done:
            self.index.insert(seq, table, done, num_full)  # type: ignore[union-attr]
            self._num_registered[sid] = num_full

    def _release(self, table: list[int]) -> None:
        """Release a table last block first; cached blocks become evictable, others free."""
        index = self.index
        if index is None:
            self.pool.decref_all_reversed(table)
            return
        zeros = self.pool.decref_all_reversed_collect(table)
        if zeros:
            self.pool.free_queue.extend(index.unlock_many(zeros))

    def _forget(self, sid: int) -> None:
        self._num_registered.pop(sid, None)

    # ---------------------------------------------------------------- fork / free
    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """``child`` shares all of ``parent``'s blocks (ref +1 each): no copies, never MemoryError."""
        src = self._tables.get(parent.seq_id)
        if src is None:
            raise KeyError(f"fork: parent seq {parent.seq_id} has no blocks on the GPU")
        if child.seq_id in self._tables or child.seq_id in self._swapped:
            raise ValueError(f"fork: child seq {child.seq_id} already has blocks")
        ref = self.pool.ref
        for b in src:
            ref[b] += 1  # held by the parent, so never in the free queue
        self._tables[child.seq_id] = list(src)
        self._seqs[child.seq_id] = child
        self._logical_blocks += len(src)
        if parent.seq_id in self._num_registered:
            self._num_registered[child.seq_id] = self._num_registered[parent.seq_id]
        return []

    def free(self, seq: Sequence) -> None:
        """Release ``seq``'s GPU or CPU blocks, last block first. Unknown sequences: no-op."""
        sid = seq.seq_id
        table = self._tables.pop(sid, None)
        if table is not None:
            del self._seqs[sid]
            self._logical_blocks -= len(table)
            self._release(table)
        cpu = self._swapped.pop(sid, None)
        if cpu is not None:
            self.cpu_pool.decref_all_reversed(cpu)
        self._forget(sid)

    # ---------------------------------------------------------------- swapping
    def swap_out(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Move the group's tables to the CPU pool; blocks shared inside the group move once."""
        tables = [(s, self._tables[s.seq_id]) for s in seqs if s.seq_id in self._tables]
        holders = Counter(b for _, t in tables for b in t)
        if len(holders) > len(self.cpu_pool.free_queue):
            return None
        mapping: dict[int, int] = {}
        for b, n in holders.items():
            c = self.cpu_pool.pop_free()
            self.cpu_pool.ref[c] = n
            mapping[b] = c
        for s, t in tables:
            self._swapped[s.seq_id] = [mapping[b] for b in t]
            del self._tables[s.seq_id]
            del self._seqs[s.seq_id]
            self._num_registered.pop(s.seq_id, None)
            self._logical_blocks -= len(t)
            self._release(t)
        return list(mapping.items())

    def swap_in(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Bring a swapped group back into fresh GPU blocks (sharing preserved)."""
        group = [(s, self._swapped[s.seq_id]) for s in seqs if s.seq_id in self._swapped]
        holders = Counter(c for _, t in group for c in t)
        if len(holders) > self.num_free_blocks():
            return None
        mapping: dict[int, int] = {}
        for c, n in holders.items():
            b = self._pop()
            self.pool.ref[b] = n
            mapping[c] = b
        for s, t in group:
            del self._swapped[s.seq_id]
            table = [mapping[c] for c in t]
            self._tables[s.seq_id] = table
            self._seqs[s.seq_id] = s
            self._logical_blocks += len(table)
            self.cpu_pool.decref_all_reversed(t)
            self._after_swap_in(s, table)
        return list(mapping.items())

    def _after_swap_in(self, seq: Sequence, table: list[int]) -> None:
        """Fresh GPU blocks: offer them to the index again (cached where the prefix is new)."""
        if self.index is not None:
            self._num_registered[seq.seq_id] = 0
            self._after_allocate(seq, table, len(table) * self.block_size)

    # ---------------------------------------------------------------- reporting / checking
    def memory_report(self) -> MemoryReport:
        """The paper's Fig. 2 categories; O(#sequences). See :mod:`kvlab.allocator.paged_report`."""
        return paged_memory_report(self.tables(), self.sequences(), block_size=self.block_size,
                                   num_blocks=self.num_blocks, max_model_len=self.max_model_len,
                                   num_free_blocks=self.num_free_blocks(),
                                   logical_blocks=self.num_logical_blocks(),
                                   cached_free_blocks=self.num_cached_free_blocks())

    def check_invariants(self) -> None:
        """Conservation, ref counts = table holders, free queue = ref 0, sharing only by fork."""
        holders = Counter(b for t in self._tables.values() for b in t)
        index = self.index
        parked = set()
        if index is not None:
            index.check(self.pool.ref)
            parked = {b for b in index.cached_block_ids() if self.pool.ref[b] == 0}
            assert self._num_registered.keys() == self._tables.keys(), "registration map out of sync"
        self.pool.check(holders, parked)
        self.cpu_pool.check(Counter(c for t in self._swapped.values() for c in t))
        assert self._logical_blocks == sum(len(t) for t in self._tables.values()), "logical count"
        assert self._seqs.keys() == self._tables.keys(), "seq map out of sync"
        assert not (self._tables.keys() & self._swapped.keys()), "sequence both on GPU and CPU"
        shared = {b for b, n in holders.items() if n > 1}  # only these can be held across requests
        owners: dict[int, set[str]] = {}
        for sid, t in self._tables.items():
            if not shared.isdisjoint(t):
                rid = self._seqs[sid].request.request_id
                for b in shared.intersection(t):
                    owners.setdefault(b, set()).add(rid)
        for b, reqs in owners.items():
            assert len(reqs) == 1 or self._may_share_across_requests(b), (
                f"block {b} held by requests {sorted(reqs)} without prefix sharing")
        rep = self.memory_report()
        assert rep.token_states + rep.reservation + rep.internal_frag + rep.external_frag == rep.total_slots
        assert min(rep.token_states, rep.reservation, rep.internal_frag, rep.external_frag) >= 0, rep

    def _may_share_across_requests(self, b: int) -> bool:
        """Without an index sharing comes only from fork, i.e. inside one request."""
        return self.index is not None and self.index.is_cached(b)
