"""Queries every block-table allocator answers the same way (a mixin; none of them mutates).

This is the documented read-only view of an allocator: the memory reports, the dashboard and the
tests read tables, sequences and counts through these methods, never through private fields.
An allocator using it keeps ``_tables`` (seq id -> block ids), ``_seqs`` (seq id -> sequence),
``_logical_blocks``, ``pool`` and ``cpu_pool`` (block pools with a ``free_queue``) and
``block_size``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kvlab.allocator.options import cdiv
from kvlab.request import Sequence


class BlockTableQueries:
    """Read-only queries shared by the paged, prefix and contiguous allocators."""

    _tables: dict[int, list[int]]
    _seqs: dict[int, Sequence]
    _logical_blocks: int
    block_size: int

    def tables(self) -> Mapping[int, list[int]]:
        """Live read-only mapping seq id -> block table (do not mutate the lists)."""
        return MappingProxyType(self._tables)

    def sequences(self) -> Mapping[int, Sequence]:
        """Live read-only mapping seq id -> the sequence holding that table."""
        return MappingProxyType(self._seqs)

    def num_logical_blocks(self) -> int:
        """Sum of table lengths (shared blocks counted once per table)."""
        n = getattr(self, "_logical_blocks", None)
        return n if n is not None else sum(len(t) for t in self._tables.values())

    def num_cached_free_blocks(self) -> int:
        """Cached blocks no sequence holds (evictable); 0 for allocators without a prefix cache."""
        return 0

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
