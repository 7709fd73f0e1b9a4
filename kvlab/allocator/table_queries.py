"""Queries every block-table allocator answers the same way (a mixin; none of them mutates).

An allocator using it keeps ``_tables`` (seq id -> block ids), ``pool`` and ``cpu_pool``
(:class:`~kvlab.allocator.block_pool.BlockPool` objects with a ``free_queue``) and ``block_size``.
"""

from __future__ import annotations

from kvlab.allocator.options import cdiv
from kvlab.request import Sequence


class BlockTableQueries:
    """Read-only queries shared by the paged, prefix and contiguous allocators."""

    _tables: dict[int, list[int]]
    block_size: int

    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        """No prefix cache: always ``([], 0)`` (the prefix allocator overrides this)."""
        return [], 0

    def block_table(self, seq: Sequence) -> list[int]:
        return self._tables.get(seq.seq_id, [])

    def num_free_blocks(self) -> int:
        return len(self.pool.free_queue)  # type: ignore[attr-defined]

    def num_free_cpu_blocks(self) -> int:
        return len(self.cpu_pool.free_queue)  # type: ignore[attr-defined]

    def worst_case_blocks(self, prompt_len: int, max_len: int, num_seqs: int) -> int:
        """Sharing allocators: the prompt's full blocks once, every sequence's own tail blocks
        (from the block holding the prompt's last token to ``max_len``) once per sequence."""
        shared = prompt_len // self.block_size if num_seqs > 1 else 0
        return shared + num_seqs * (cdiv(max_len, self.block_size) - shared)
