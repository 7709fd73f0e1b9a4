"""The paged allocator (vLLM's PagedAttention block manager): any free block, shared on fork.

Owns the per-sequence block tables over one :class:`BlockPool`, copy-on-write of shared partial
blocks, swapping whole sequence groups to the CPU pool, and the paged memory report. The prefix
allocator (:mod:`kvlab.allocator.prefix`) extends it through three hooks: ``_on_pop`` (a block
left the free queue: evict its cache entry), ``_after_allocate`` (register newly full blocks) and
``_release`` (free a table).
"""

from __future__ import annotations

from collections import Counter

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.base import NO_NEW_BLOCKS, MemoryReport, NewBlocks
from kvlab.allocator.block_pool import BlockPool, FifoBlockPool
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

    Args:
        num_blocks: GPU blocks in the pool.
        block_size: token slots per block, 1..256.
        max_model_len: longest sequence in tokens (caps the expected final length in reports).
        num_cpu_blocks: CPU swap pool size in blocks (0 disables swapping: ``swap_out`` -> None).

    Nothing is random: the same operations give the same block ids.
    """

    OPTIONS: dict[str, tuple[str, ...]] = {}
    name = "paged"
    POOL: type[BlockPool] = FifoBlockPool  # prefix caching needs removal from the middle
    _REGISTERS = False  # does _after_allocate do anything (prefix: register full blocks)

    def __init__(self, num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
                 num_cpu_blocks: int = 0, **options: object) -> None:
        validate_geometry(num_blocks, block_size, max_model_len, num_cpu_blocks)
        self.options = check_options(self.name, options, self.OPTIONS)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.pool = self.POOL(num_blocks)
        self.cpu_pool = FifoBlockPool(num_cpu_blocks)
        self._tables: dict[int, list[int]] = {}  # seq_id -> GPU block ids, logical order
        self._seqs: dict[int, Sequence] = {}  # seq_id -> sequence, for the memory report
        self._swapped: dict[int, list[int]] = {}  # seq_id -> CPU block ids
        self._logical_blocks = 0  # sum of table lengths, kept incrementally (report is O(#seqs))
        self._query_tokens = 0
        self._hit_tokens = 0

    # ---------------------------------------------------------------- queries (no mutation)
    def stats(self) -> dict[str, int]:
        return {"prefix_query_tokens": self._query_tokens, "prefix_hit_tokens": self._hit_tokens}

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
                    if self._REGISTERS:  # skip a no-op call on the paged hot path
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
        revive = sum(1 for b in cblocks if ref[b] == 0)  # cached blocks leaving the free queue
        if num_new + len(cow) + revive > len(pool.free_queue):
            return None
        is_new = table is None
        if table is None:
            table = self._tables[sid] = []
            self._seqs[sid] = seq
            self._on_new_seq(seq)
        for b in cblocks:
            self._attach(b)
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
        if is_new:
            self._count_query(seq, ctokens)
        self._after_allocate(seq, table, total)
        return new_blocks

    def _pop(self) -> int:
        b = self.pool.pop_free()
        self._on_pop(b)
        return b

    # ---------------------------------------------------------------- hooks (prefix overrides)
    def _on_pop(self, b: int) -> None:
        """Block ``b`` left the free queue for a new use."""

    def _attach(self, b: int) -> None:
        """A prefix-cache hit block joins a table (ref +1; leaves the free queue if it was there)."""
        self.pool.incref(b)

    def _on_new_seq(self, seq: Sequence) -> None:
        """``seq`` got its first (empty) table."""

    def _after_allocate(self, seq: Sequence, table: list[int], covered_tokens: int) -> None:
        """The table now covers ``covered_tokens`` tokens of ``seq``."""

    def _count_query(self, seq: Sequence, hit_tokens: int) -> None:
        """``seq`` got its first table (admission); ``hit_tokens`` of its prompt came from the cache."""

    def _release(self, table: list[int]) -> None:
        self.pool.decref_all_reversed(table)

    def _forget(self, sid: int) -> None:
        """Per-sequence side state of ``sid`` is no longer needed."""

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
        self._fork_side_state(parent, child)
        return []

    def _fork_side_state(self, parent: Sequence, child: Sequence) -> None:
        """Copy per-sequence side state (prefix: the cached block hashes)."""

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
            self._logical_blocks -= len(t)
            self._release(t)
        return list(mapping.items())

    def swap_in(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Bring a swapped group back into fresh GPU blocks (sharing preserved)."""
        group = [(s, self._swapped[s.seq_id]) for s in seqs if s.seq_id in self._swapped]
        holders = Counter(c for _, t in group for c in t)
        if len(holders) > len(self.pool.free_queue):
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
        """``seq`` has a fresh GPU table after a swap-in."""

    # ---------------------------------------------------------------- reporting / checking
    def memory_report(self) -> MemoryReport:
        """The paper's Fig. 2 categories; O(#sequences). See :mod:`kvlab.allocator.paged_report`."""
        return paged_memory_report(self._tables, self._seqs, block_size=self.block_size,
                                   num_blocks=self.num_blocks, max_model_len=self.max_model_len,
                                   num_free_blocks=len(self.pool.free_queue),
                                   logical_blocks=self._logical_blocks,
                                   cached_free_blocks=self._num_cached_free())

    def _num_cached_free(self) -> int:
        return 0

    def check_invariants(self) -> None:
        """Conservation, ref counts = table holders, free queue = ref 0, sharing only by fork."""
        holders = Counter(b for t in self._tables.values() for b in t)
        self.pool.check(holders)
        self.cpu_pool.check(Counter(c for t in self._swapped.values() for c in t))
        assert self._logical_blocks == sum(len(t) for t in self._tables.values()), "logical count"
        assert self._seqs.keys() == self._tables.keys(), "seq map out of sync"
        assert not (self._tables.keys() & self._swapped.keys()), "sequence both on GPU and CPU"
        owners: dict[int, set[str]] = {}
        for sid, t in self._tables.items():
            for b in t:
                owners.setdefault(b, set()).add(self._seqs[sid].request.request_id)
        for b, reqs in owners.items():
            assert len(reqs) == 1 or self._may_share_across_requests(b), (
                f"block {b} held by requests {sorted(reqs)} without prefix sharing")
        rep = self.memory_report()
        assert rep.token_states + rep.reservation + rep.internal_frag + rep.external_frag == rep.total_slots
        assert min(rep.token_states, rep.reservation, rep.internal_frag, rep.external_frag) >= 0, rep

    def _may_share_across_requests(self, b: int) -> bool:
        """Paged sharing comes only from fork, i.e. inside one request."""
        return False
