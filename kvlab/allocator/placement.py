"""Where a contiguous allocation goes: first-fit over free extents, or a buddy allocator.

Owns only the geometry of free space (which runs of consecutive block ids are free); the block
pool keeps the reference counts. Both placements are deterministic (lowest address wins) and
exactly reversible: freeing what was just allocated restores the previous state, which is what
makes the contiguous allocator's multi-run reservations atomic (allocate all, or roll back).
"""

from __future__ import annotations

import bisect


class FirstFitPlacement:
    """Free space as sorted, coalesced extents ``start -> length``; allocate at the lowest fit.

    ``alloc(n)`` grants exactly ``n`` blocks. O(#extents) per call.
    """

    def __init__(self, num_blocks: int) -> None:
        self._starts: list[int] = [0] if num_blocks else []
        self._lens: dict[int, int] = {0: num_blocks} if num_blocks else {}

    def alloc(self, n: int) -> tuple[int, int] | None:
        """Return ``(start, granted)`` of a free run of ``n`` blocks, or ``None`` if none is long enough."""
        for i, s in enumerate(self._starts):
            length = self._lens[s]
            if length >= n:
                del self._lens[s]
                if length == n:
                    del self._starts[i]
                else:
                    self._starts[i] = s + n
                    self._lens[s + n] = length - n
                return s, n
        return None

    def free(self, start: int, n: int) -> None:
        """Return the run ``[start, start + n)``, merging with free neighbours."""
        starts, lens = self._starts, self._lens
        i = bisect.bisect_left(starts, start)
        if i < len(starts) and starts[i] == start + n:  # merge with the next extent
            n += lens.pop(starts[i])
            del starts[i]
        if i > 0 and starts[i - 1] + lens[starts[i - 1]] == start:  # merge with the previous one
            lens[starts[i - 1]] += n
        else:
            starts.insert(i, start)
            lens[start] = n

    def largest_free(self) -> int:
        return max(self._lens.values(), default=0)

    def extents(self) -> list[tuple[int, int]]:
        return [(s, self._lens[s]) for s in self._starts]


class BuddyPlacement:
    """Binary buddy allocator over block ids, as in the paper's Orca baselines.

    Chunks are power-of-two numbers of blocks, aligned to their size; the largest is
    ``max_chunk`` blocks (a power of two). The pool is pre-split into max-size chunks and then
    power-of-two chunks for the remainder; a freed chunk coalesces with its free buddy.
    ``alloc(n)`` grants ``next_pow2(n)`` blocks (the rounding is the paper's external
    fragmentation "& others").
    """

    def __init__(self, num_blocks: int, max_chunk: int) -> None:
        if max_chunk < 1 or max_chunk & (max_chunk - 1):
            raise ValueError(f"buddy max_chunk must be a power of two >= 1, got {max_chunk}")
        self.max_order = max_chunk.bit_length() - 1
        self._free: list[list[int]] = [[] for _ in range(self.max_order + 1)]  # sorted starts per order
        start = 0
        for order in range(self.max_order, -1, -1):
            size = 1 << order
            while num_blocks - start >= size and (order == self.max_order or not self._free[order]):
                self._free[order].append(start)
                start += size
        assert start == num_blocks

    def alloc(self, n: int) -> tuple[int, int] | None:
        order = max(0, (n - 1).bit_length())
        if order > self.max_order:
            return None
        j = order
        while j <= self.max_order and not self._free[j]:
            j += 1
        if j > self.max_order:
            return None
        start = self._free[j].pop(0)
        while j > order:  # split, keeping the lower half and freeing the upper buddy
            j -= 1
            bisect.insort(self._free[j], start + (1 << j))
        return start, 1 << order

    def free(self, start: int, n: int) -> None:
        order = n.bit_length() - 1
        assert n == 1 << order, f"buddy free of a non power-of-two run {n}"
        while order < self.max_order:
            buddy = start ^ (1 << order)
            lst = self._free[order]
            i = bisect.bisect_left(lst, buddy)
            if i == len(lst) or lst[i] != buddy:
                break
            del lst[i]
            start = min(start, buddy)
            order += 1
        bisect.insort(self._free[order], start)

    def largest_free(self) -> int:
        for order in range(self.max_order, -1, -1):
            if self._free[order]:
                return 1 << order
        return 0

    def extents(self) -> list[tuple[int, int]]:
        return sorted((s, 1 << o) for o, lst in enumerate(self._free) for s in lst)
