"""Read-only queries every block-table allocator answers the same way (a mixin).

An allocator using it keeps ``_tables`` (seq id -> block ids), ``pool`` and ``cpu_pool`` (with a
``free`` collection) and ``_copies`` (queued (src, dst) block copies).
"""

from __future__ import annotations

from kvlab.request import Sequence


class TableQueries:
    _tables: dict[int, list[int]]
    _copies: list[tuple[int, int]]

    def get_computed_blocks(self, seq: Sequence) -> tuple[list[int], int]:
        """No prefix cache: always ``([], 0)`` (the prefix allocator overrides this)."""
        return [], 0

    def block_table(self, seq: Sequence) -> list[int]:
        return self._tables.get(seq.seq_id, [])

    def num_free_blocks(self) -> int:
        return len(self.pool.free)  # type: ignore[attr-defined]

    def num_free_cpu_blocks(self) -> int:
        return len(self.cpu_pool.free)  # type: ignore[attr-defined]

    def take_copies(self) -> list[tuple[int, int]]:
        copies, self._copies = self._copies, []
        return copies
