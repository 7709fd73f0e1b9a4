"""The prefix-caching allocator: paged allocation plus an index of cached full blocks.

Owns the hash-chain index (block hash -> block id), the per-block cache metadata and the
per-sequence hash lists. A full block's key is ``hash((parent_key, tokens))`` where ``tokens`` is
the tuple of its token ids, so a key names the whole prefix up to and including that block. The
tuple and the parent key are stored per block and compared on every hit, so a hash collision
can never hand out wrong KV.

Lifecycle of a cached block: registered when an allocation covers all of its tokens (the executor
writes that KV in the same step, before anything reads it); shared by any later sequence whose
prefix matches (ref +1); when its ref count drops to 0 it stays in the index *and* in the LRU free
queue (evictable). Allocation pops the queue head, and only then is the cache entry dropped, so
only unreferenced blocks are ever evicted, least recently released first.
"""

from __future__ import annotations

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.block_pool import BlockPool
from kvlab.allocator.paged import PagedAllocator
from kvlab.request import Sequence


@ALLOCATORS.register("prefix")
class PrefixCachingAllocator(PagedAllocator):
    """Paged allocation with automatic prefix caching (vLLM APC / SGLang-style reuse).

    Same constructor and semantics as :class:`PagedAllocator`, plus:

    - :meth:`get_computed_blocks` returns the longest chain of cached full blocks matching the
      sequence's tokens, capped at ``(num_tokens - 1) // block_size`` blocks so the last token is
      always computed (for a fresh prompt ``num_tokens == num_prompt_tokens``; after a
      recompute-preemption generated tokens' blocks can hit too). Does not mutate.
    - ``allocate_slots(seq, n, computed=(blocks, tokens))`` attaches the hit (ref +1, a cached
      free block leaves the free queue) and counts ``prefix_query_tokens`` (``seq.num_tokens``
      at admission) and ``prefix_hit_tokens``.
    - ``num_free_blocks()`` includes evictable cached blocks.
    """

    name = "prefix"
    POOL = BlockPool  # OrderedDict queue: a hit takes a cached block out of the middle
    _REGISTERS = True

    def __init__(self, num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
                 num_cpu_blocks: int = 0, **options: object) -> None:
        super().__init__(num_blocks, block_size, max_model_len, num_cpu_blocks, **options)
        self._index: dict[int, int] = {}  # block key -> block id
        self._bkey: list[int | None] = [None] * num_blocks  # block id -> its key (None: not cached)
        self._bparent: list[int | None] = [None] * num_blocks  # parent key, checked on a hit
        self._btokens: list[tuple[int, ...] | None] = [None] * num_blocks  # tokens, checked on a hit
        self._seq_keys: dict[int, list[int]] = {}  # seq_id -> keys of its full blocks (incremental)
        self._num_registered: dict[int, int] = {}  # seq_id -> leading table blocks already registered
        self._cached_free = 0  # blocks in the index with ref 0 (evictable)

    # ---------------------------------------------------------------- lookup
    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        bs = self.block_size
        tokens = seq.token_ids
        max_blocks = (len(tokens) - 1) // bs
        index = self._index
        bparent = self._bparent
        btokens = self._btokens
        blocks: list[int] = []
        parent: int | None = None
        for j in range(max_blocks):
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            key = hash((parent, chunk))
            b = index.get(key)
            if b is None or bparent[b] != parent or btokens[b] != chunk:
                break
            blocks.append(b)
            parent = key
        return blocks, len(blocks) * bs

    # ---------------------------------------------------------------- hooks into PagedAllocator
    def _on_pop(self, b: int) -> None:
        key = self._bkey[b]
        if key is not None:  # evict: the block was cached and unreferenced (it was in the queue)
            del self._index[key]
            self._bkey[b] = None
            self._bparent[b] = None
            self._btokens[b] = None
            self._cached_free -= 1

    def _attach(self, b: int) -> None:
        if self.pool.ref[b] == 0:
            self._cached_free -= 1
        self.pool.incref(b)

    def _on_new_seq(self, seq: Sequence) -> None:
        self._seq_keys[seq.seq_id] = []
        self._num_registered[seq.seq_id] = 0

    def _count_query(self, seq: Sequence, hit_tokens: int) -> None:
        self._query_tokens += seq.num_tokens
        self._hit_tokens += hit_tokens

    def _after_allocate(self, seq: Sequence, table: list[int], covered_tokens: int) -> None:
        sid = seq.seq_id
        bs = self.block_size
        tokens = seq.token_ids
        num_full = min(covered_tokens, len(tokens)) // bs
        done = self._num_registered[sid]
        if num_full <= done:  # decode within a block: nothing to register
            return
        keys = self._seq_keys[sid]
        index = self._index
        bkey = self._bkey
        for j in range(done, num_full):
            parent = keys[j - 1] if j else None
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            if j < len(keys):
                key = keys[j]
            else:
                key = hash((parent, chunk))
                keys.append(key)
            b = table[j]
            # First writer wins: if another block already caches this prefix, ours stays private.
            if bkey[b] is None and key not in index:
                index[key] = b
                bkey[b] = key
                self._bparent[b] = parent
                self._btokens[b] = chunk
        self._num_registered[sid] = num_full

    def _release(self, table: list[int]) -> None:
        ref = self.pool.ref
        free = self.pool.free_queue
        bkey = self._bkey
        cached_free = 0
        for b in reversed(table):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                free[b] = None  # cached blocks stay indexed: evictable, LRU
                if bkey[b] is not None:
                    cached_free += 1
            elif r < 0:
                raise AssertionError(f"block {b}: reference count went negative")
        self._cached_free += cached_free

    def _forget(self, sid: int) -> None:
        self._seq_keys.pop(sid, None)
        self._num_registered.pop(sid, None)

    def _fork_side_state(self, parent: Sequence, child: Sequence) -> None:
        self._seq_keys[child.seq_id] = list(self._seq_keys[parent.seq_id])
        self._num_registered[child.seq_id] = self._num_registered[parent.seq_id]

    def _after_swap_in(self, seq: Sequence, table: list[int]) -> None:
        # Fresh GPU blocks: re-register them where the prefix is no longer cached elsewhere.
        self._num_registered[seq.seq_id] = 0
        self._after_allocate(seq, table, len(table) * self.block_size)

    def _num_cached_free(self) -> int:
        return self._cached_free

    def _may_share_across_requests(self, b: int) -> bool:
        return self._bkey[b] is not None

    def check_invariants(self) -> None:
        super().check_invariants()
        for key, b in self._index.items():
            assert self._bkey[b] == key, f"index says block {b} has key {key}, block says {self._bkey[b]}"
        assert sum(k is not None for k in self._bkey) == len(self._index), "index/block keys differ"
        n = sum(1 for b in self._index.values() if self.pool.ref[b] == 0)
        assert n == self._cached_free, f"cached free count {self._cached_free} != {n}"
        assert self._seq_keys.keys() == self._num_registered.keys()
