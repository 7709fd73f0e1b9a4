"""The KV allocator contract and the paper's memory report.

Every allocator hands out block ids of ONE block pool (``num_blocks`` blocks of ``block_size``
token slots). Kernels read KV through a per-sequence block table, so contiguous, paged and
prefix-shared allocation differ only in *which* ids they hand out and when they share them.

Names follow vLLM (``get_computed_blocks``, ``allocate_slots``); the atomic ``None``-means-no
contract follows mini-sglang. An allocator never touches tensors: data movement it needs
(copy-on-write, fork copies for allocators that cannot share, swapping) is *returned* as
``(src, dst)`` block-id pairs (``NewBlocks.copies``, ``fork``'s result, ``swap_*``'s result); the
scheduler puts them into its ``SchedulerOutput`` and the executor runs them before the forward.
Nothing is queued inside the allocator for someone to drain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from kvlab.request import Sequence


class NewBlocks(list):
    """What ``allocate_slots`` returns on success: the newly allocated block ids (it *is* that
    list) plus ``copies``, the ``(src, dst)`` copy-on-write pairs the executor must run before the
    step writes into ``dst`` (empty unless a shared block was about to be written).

    Callers read it and never mutate it: :data:`NO_NEW_BLOCKS` is shared by every call that
    needed nothing (the decode fast path).
    """

    copies: tuple[tuple[int, int], ...] | list[tuple[int, int]] = ()


NO_NEW_BLOCKS = NewBlocks()


@dataclass(frozen=True)
class MemoryReport:
    """A snapshot of the pool in the vLLM paper's Fig. 2 categories, in token slots.

    ``token_states + reservation + internal_frag + external_frag == total_slots`` always.

    - token_states: slots holding live KV (shared slots counted once);
    - reservation: slots a running sequence holds and will still write before it finishes;
    - internal_frag: slots held that will never be written (over-reservation, the unused tail of
      a sequence's last block);
    - external_frag: everything else — free slots, slots lost to placement (buddy rounding),
      cached-but-unreferenced prefix blocks (evictable, so free for the next request).

    Extra fields: ``free_slots`` (subset of external_frag), ``logical_slots`` (slots the sequences
    would hold without sharing), ``shared_saved_slots`` (= logical - physical), block counts.
    """

    total_slots: int
    token_states: int
    reservation: int
    internal_frag: int
    external_frag: int
    free_slots: int
    logical_blocks: int = 0
    physical_blocks: int = 0
    shared_saved_slots: int = 0
    cached_free_slots: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def ratios(self) -> dict[str, float]:
        t = max(self.total_slots, 1)
        return {
            "token_states": self.token_states / t,
            "reservation": self.reservation / t,
            "internal_frag": self.internal_frag / t,
            "external_frag": self.external_frag / t,
        }


@runtime_checkable
class KVAllocator(Protocol):
    """What the scheduler may ask of an allocator. Sequences are keyed by ``seq.seq_id``.

    Constructor convention (the registry calls it this way)::

        Allocator(num_blocks, block_size, max_model_len, num_cpu_blocks=0, **options)
    """

    block_size: int
    num_blocks: int

    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        """Longest cached prefix of ``seq``'s tokens: (block ids, number of tokens).

        Full blocks only, and never the whole prompt (its last token must be computed to get
        logits). Allocators without a prefix cache return ``([], 0)``. Does not mutate state
        (hit counters included: they are counted when ``allocate_slots`` accepts the hit).
        """
        ...

    def allocate_slots(
        self, seq: Sequence, num_new_tokens: int, computed: tuple[list[int], int] | None = None
    ) -> NewBlocks | None:
        """Make ``seq``'s block table cover ``seq.num_computed_tokens + computed_tokens +
        num_new_tokens`` tokens, first attaching the ``computed`` prefix hit if given.

        Returns the newly allocated block ids as a :class:`NewBlocks` (empty when the current
        blocks suffice), or ``None`` when it does not fit — and then the state is exactly as
        before (atomic). If the slots to be written lie in a block shared with another sequence,
        that block is copied first (copy-on-write); the pair is in the result's ``copies``.
        Does not change ``seq.num_computed_tokens`` (the scheduler does).
        """
        ...

    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """Give ``child`` the parent's KV: shared blocks (ref counts +1) where the allocator shares;
        a copy where it cannot. Returns the ``(src, dst)`` block copies the executor must run
        (``[]`` for sharing allocators). Raises ``MemoryError`` only for an allocator that must
        copy and has no room (never for sharing allocators); the state is then unchanged."""
        ...

    def free(self, seq: Sequence) -> None:
        """Release ``seq``'s blocks, last block first (so tail blocks are evicted first).
        Freeing an unknown sequence is a no-op."""
        ...

    def block_table(self, seq: Sequence) -> list[int]:
        """Physical block ids of ``seq``, logical order. The caller must not mutate it."""
        ...

    def num_free_blocks(self) -> int:
        """Blocks that an allocation could use now (free + evictable cached blocks)."""
        ...

    def swap_out(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Move the KV of ``seqs`` (one sequence group, all or nothing) to the CPU swap pool.
        Returns (gpu block, cpu block) pairs to copy, or ``None`` (state unchanged) if the swap
        pool lacks room. Blocks shared inside the group are swapped once and stay shared."""
        ...

    def swap_in(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Bring a swapped group back: (cpu block, gpu block) pairs, or ``None`` if it does not fit."""
        ...

    def num_free_cpu_blocks(self) -> int: ...

    def worst_case_blocks(self, prompt_len: int, max_len: int, num_seqs: int) -> int:
        """GPU blocks a request of ``num_seqs`` sequences may hold at once if every sequence
        grows to ``max_len`` tokens, in an otherwise empty pool (prompt blocks counted once where
        the allocator shares them). The scheduler rejects a request for which this exceeds
        ``num_blocks``: it could never finish. Does not mutate."""
        ...

    def memory_report(self) -> MemoryReport:
        """Current usage in the paper's categories. Does not mutate."""
        ...

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if any internal invariant is broken (conservation of blocks,
        ref counts >= 0 and equal to the number of tables holding a block, free list consistent)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters: ``prefix_query_tokens``, ``prefix_hit_tokens`` (0 for non-prefix allocators)."""
        ...
