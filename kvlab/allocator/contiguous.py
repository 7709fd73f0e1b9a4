"""The contiguous allocator (Orca-style reservation): one run of consecutive blocks per sequence.

Owns the per-sequence runs, the reservation policy (how many slots a sequence reserves up front),
the group reservations of multi-sequence requests, copying forks and contiguous swapping. Free
space geometry lives in :mod:`kvlab.allocator.placement`; reference counts in the shared
:class:`BlockPool` (every block of a run has ref 1: nothing is shared).
"""

from __future__ import annotations

from collections import Counter

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.base import NO_NEW_BLOCKS, MemoryReport, NewBlocks
from kvlab.allocator.block_pool import BlockPool, FifoBlockPool
from kvlab.allocator.contiguous_report import Run, contiguous_memory_report
from kvlab.allocator.options import cdiv, check_options, validate_geometry
from kvlab.allocator.placement import BuddyPlacement, FirstFitPlacement
from kvlab.allocator.table_queries import BlockTableQueries
from kvlab.request import Sequence


@ALLOCATORS.register("contiguous")
class ContiguousAllocator(BlockTableQueries):
    """Orca-style KV allocation: each sequence reserves ``A`` token slots of consecutive blocks.

    ``A = min(P + R, max_model_len)`` (at least the first allocation's tokens); ``R`` by option
    ``reservation``: ``max`` (``max_model_len - P``), ``pow2`` (next power of two >= expected
    output) or ``oracle`` (expected output). ``placement``: ``buddy`` (default; power-of-two
    chunks as the paper's Orca) or ``first_fit`` (exactly ``ceil(A / B)`` blocks).

    The run is taken at the first ``allocate_slots``; later calls return ``[]`` while
    ``num_computed_tokens + n <= A`` and ``None`` beyond it (it never grows: the scheduler must
    preempt or finish the sequence). A request with ``group_size > 1`` reserves ``group_size``
    runs at its first allocation and holds the spares (and pruned beams' runs) for its forks,
    until its last live sequence here is freed. Details: ``docs/allocators.md``.

    Args: as :class:`~kvlab.allocator.paged.PagedAllocator`, plus options ``reservation`` and
    ``placement``. Nothing is random.
    """

    OPTIONS: dict[str, tuple[str, ...]] = {
        "reservation": ("max", "pow2", "oracle"),
        "placement": ("buddy", "first_fit"),
    }
    name = "contiguous"

    def __init__(self, num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
                 num_cpu_blocks: int = 0, **options: object) -> None:
        validate_geometry(num_blocks, block_size, max_model_len, num_cpu_blocks)
        self.options = check_options(self.name, options, self.OPTIONS)
        self.reservation = self.options["reservation"]
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.pool = BlockPool(num_blocks)
        self.cpu_pool = FifoBlockPool(num_cpu_blocks)
        if self.options["placement"] == "buddy":
            max_chunk = 1 << (cdiv(max_model_len, block_size) - 1).bit_length()
            self.placement: FirstFitPlacement | BuddyPlacement = BuddyPlacement(num_blocks, max_chunk)
        else:
            self.placement = FirstFitPlacement(num_blocks)
        self._runs: dict[int, Run] = {}
        self._tables: dict[int, list[int]] = {}
        self._seqs: dict[int, Sequence] = {}
        self._held: dict[str, list[Run]] = {}  # request id -> runs reserved for later forks
        self._alive: dict[str, int] = {}  # request id -> sequences holding a run or a CPU copy
        self._swapped: dict[int, tuple[list[int], int, int]] = {}  # seq -> (cpu blocks, granted, A)
        self._swapped_held: dict[str, list[int]] = {}  # request -> slots A of runs released by swap
        self._final_len: dict[str, int] = {}  # request id -> P + O (for held runs in the report)

    # ---------------------------------------------------------------- queries
    def stats(self) -> dict[str, int]:
        return {"prefix_query_tokens": 0, "prefix_hit_tokens": 0}

    def reserved_slots(self, seq: Sequence, at_least: int = 0) -> int:
        """``A`` for ``seq``: ``min(P + R, max_model_len)``, raised to ``at_least`` tokens."""
        p = seq.num_prompt_tokens
        o = seq.request.expected_output_len
        if self.reservation == "max":
            r = self.max_model_len - p
        elif self.reservation == "pow2":
            r = 1 << (o - 1).bit_length() if o > 0 else 0
        else:
            r = o
        return max(min(p + r, self.max_model_len), at_least)

    def worst_case_blocks(self, prompt_len: int, max_len: int, num_seqs: int) -> int:
        """Every sequence holds its own run of the reservation (at least ``max_len`` slots),
        rounded up to a power of two under buddy placement; nothing is shared."""
        if self.reservation == "max":
            slots = self.max_model_len
        elif self.reservation == "pow2":
            out = max_len - prompt_len
            slots = min(prompt_len + (1 << (out - 1).bit_length() if out > 0 else 0), self.max_model_len)
        else:
            slots = max_len
        blocks = cdiv(max(slots, max_len), self.block_size)
        if self.options["placement"] == "buddy":
            blocks = 1 << (blocks - 1).bit_length()
        return num_seqs * blocks

    # ---------------------------------------------------------------- runs
    def _take_runs(self, sizes: list[tuple[int, int]]) -> list[Run] | None:
        """Place runs of ``(blocks, slots)`` all or nothing (rolled back on failure)."""
        got: list[Run] = []
        for nblocks, slots in sizes:
            placed = self.placement.alloc(nblocks)
            if placed is None:
                for start, granted, _ in reversed(got):
                    self.placement.free(start, granted)
                return None
            got.append((placed[0], placed[1], slots))
        for start, granted, _ in got:
            for b in range(start, start + granted):
                self.pool.take(b)
        return got

    def _give_back(self, run: Run) -> None:
        start, granted, _ = run
        self.pool.decref_all_reversed(list(range(start, start + granted)))
        self.placement.free(start, granted)

    def _install(self, seq: Sequence, run: Run) -> list[int]:
        table = list(range(run[0], run[0] + run[1]))
        self._runs[seq.seq_id] = run
        self._tables[seq.seq_id] = table
        self._seqs[seq.seq_id] = seq
        return table

    # ---------------------------------------------------------------- allocation
    def allocate_slots(self, seq: Sequence, num_new_tokens: int,
                       computed: tuple[list[int], int] | None = None) -> NewBlocks | None:
        """First call: reserve the run (and the group's runs); returns its block ids or ``None``.
        Later calls: no new blocks within the reservation, ``None`` beyond it. Never copies."""
        if computed and computed[0]:
            raise ValueError("the contiguous allocator has no prefix cache; computed must be empty")
        total = seq.num_computed_tokens + num_new_tokens
        run = self._runs.get(seq.seq_id)
        if run is not None:
            return NO_NEW_BLOCKS if total <= run[2] else None
        if seq.seq_id in self._swapped:
            raise ValueError(f"seq {seq.seq_id} is swapped out: swap_in before allocating")
        if total > self.max_model_len:
            return None  # can never fit
        rid = seq.request.request_id
        held = self._held.get(rid)
        if held and held[0][2] >= total:
            run = held.pop(0)
            if not held:
                del self._held[rid]
        else:
            slots = self.reserved_slots(seq, total)
            size = (cdiv(slots, self.block_size), slots)
            count = seq.group_size if seq.group_size > 1 and not self._alive.get(rid) else 1
            runs = self._take_runs([size] * count)
            if runs is None:
                return None
            run = runs[0]
            if count > 1:
                self._held.setdefault(rid, []).extend(runs[1:])
        self._alive[rid] = self._alive.get(rid, 0) + 1
        self._final_len[rid] = seq.num_prompt_tokens + seq.request.expected_output_len
        return NewBlocks(self._install(seq, run))

    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """Give ``child`` its own run (a held one if the request has one); returns the copies of
        the parent's blocks holding KV (``ceil(parent.num_computed_tokens / B)`` blocks).

        Raises ``MemoryError`` if no run is held and none can be placed (state unchanged)."""
        prun = self._runs.get(parent.seq_id)
        if prun is None:
            raise KeyError(f"fork: parent seq {parent.seq_id} has no blocks on the GPU")
        if child.seq_id in self._runs or child.seq_id in self._swapped:
            raise ValueError(f"fork: child seq {child.seq_id} already has blocks")
        rid = child.request.request_id
        held = self._held.get(rid)
        if held:
            run = held.pop(0)
            if not held:
                del self._held[rid]
        else:
            runs = self._take_runs([(cdiv(prun[2], self.block_size), prun[2])])
            if runs is None:
                raise MemoryError(f"fork: no run of {prun[1]} consecutive free blocks for seq {child.seq_id}")
            run = runs[0]
        table = self._install(child, run)
        self._alive[rid] = self._alive.get(rid, 0) + 1
        ptable = self._tables[parent.seq_id]
        n = min(cdiv(parent.num_computed_tokens, self.block_size), len(table))
        return list(zip(ptable[:n], table[:n]))

    def free(self, seq: Sequence) -> None:
        """Release the run (and, with the request's last sequence, its held runs). A pruned beam's
        run is held for the request's next fork while other beams are alive."""
        sid = seq.seq_id
        run = self._runs.pop(sid, None)
        swapped = self._swapped.pop(sid, None)
        if run is None and swapped is None:
            return
        rid = seq.request.request_id
        if run is not None:
            del self._tables[sid]
            del self._seqs[sid]
            if self._alive[rid] > 1 and seq.request.sampling_params.use_beam_search:
                # Beam search frees pruned beams and forks survivors in the same step: keep the
                # run for the request so the fork that replaces this beam cannot fail.
                self._held.setdefault(rid, []).append(run)
            else:
                self._give_back(run)
        if swapped is not None:
            self.cpu_pool.decref_all_reversed(swapped[0])
        self._alive[rid] -= 1
        if self._alive[rid] == 0:
            del self._alive[rid]
            self._final_len.pop(rid, None)
            for held in reversed(self._held.pop(rid, [])):
                self._give_back(held)
            self._swapped_held.pop(rid, None)

    # ---------------------------------------------------------------- swapping
    def swap_out(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Copy each sequence's KV blocks to the CPU and release its run (and the request's held
        runs, re-reserved on swap-in). ``None`` (unchanged) if the CPU pool lacks room."""
        group = [s for s in seqs if s.seq_id in self._runs]
        counts = [min(cdiv(s.num_computed_tokens, self.block_size), self._runs[s.seq_id][1]) for s in group]
        if sum(counts) > len(self.cpu_pool.free_queue):
            return None
        pairs: list[tuple[int, int]] = []
        for s, n in zip(group, counts):
            start, granted, slots = self._runs.pop(s.seq_id)
            cpu = [self.cpu_pool.pop_free() for _ in range(n)]
            pairs.extend(zip(range(start, start + n), cpu))
            self._swapped[s.seq_id] = (cpu, granted, slots)
            del self._tables[s.seq_id]
            del self._seqs[s.seq_id]
            self._give_back((start, granted, slots))
        for rid in dict.fromkeys(s.request.request_id for s in group):
            held = self._held.pop(rid, [])
            for run in reversed(held):
                self._give_back(run)
            if held:
                self._swapped_held.setdefault(rid, []).extend(a for _, _, a in held)
        return pairs

    def swap_in(self, seqs: list[Sequence]) -> list[tuple[int, int]] | None:
        """Place a consecutive run again for each swapped sequence (plus the request's held runs);
        ``None`` (unchanged) if they do not all fit."""
        group = [s for s in seqs if s.seq_id in self._swapped]
        rids = list(dict.fromkeys(s.request.request_id for s in group))
        slots = [self._swapped[s.seq_id][2] for s in group]
        slots += [a for rid in rids for a in self._swapped_held.get(rid, [])]
        runs = self._take_runs([(cdiv(a, self.block_size), a) for a in slots])
        if runs is None:
            return None
        pairs: list[tuple[int, int]] = []
        for s, run in zip(group, runs):
            cpu, _, _ = self._swapped.pop(s.seq_id)
            table = self._install(s, run)
            pairs.extend(zip(cpu, table))
            self.cpu_pool.decref_all_reversed(cpu)
        extra = runs[len(group):]
        for rid in rids:
            for _ in self._swapped_held.pop(rid, []):
                self._held.setdefault(rid, []).append(extra.pop(0))
        return pairs

    # ---------------------------------------------------------------- reporting / checking
    def memory_report(self) -> MemoryReport:
        """Paper §4 contiguous formulas; O(#sequences). See :mod:`kvlab.allocator.contiguous_report`."""
        return contiguous_memory_report(self._runs, self._seqs, self._held, self._final_len,
                                        block_size=self.block_size, num_blocks=self.num_blocks,
                                        num_free_blocks=len(self.pool.free_queue))

    def check_invariants(self) -> None:
        """Conservation, ref = holders (tables + held runs), runs consecutive and disjoint."""
        holders: Counter[int] = Counter()
        runs = list(self._runs.values()) + [r for rs in self._held.values() for r in rs]
        for sid, run in self._runs.items():
            assert self._tables[sid] == list(range(run[0], run[0] + run[1])), f"seq {sid}: not consecutive"
        for start, granted, slots in runs:
            assert cdiv(slots, self.block_size) <= granted
            holders.update(range(start, start + granted))
        assert max(holders.values(), default=1) == 1, "a block is in two runs"
        self.pool.check(holders)
        self.cpu_pool.check(Counter(c for cpu, _, _ in self._swapped.values() for c in cpu))
        free_in_placement = sum(n for _, n in self.placement.extents())
        assert free_in_placement == len(self.pool.free_queue), "placement and pool disagree on free blocks"
        free = self.pool.free_queue
        for s, n in self.placement.extents():
            assert all(map(free.__contains__, range(s, s + n))), "placement hands out a used block"
        assert sum(self._alive.values()) == len(self._runs) + len(self._swapped), "alive counts"
        assert all(rid in self._alive for rid in self._held), "held runs of a request with no sequence"
        rep = self.memory_report()
        assert rep.token_states + rep.reservation + rep.internal_frag + rep.external_frag == rep.total_slots
        assert min(rep.token_states, rep.reservation, rep.internal_frag, rep.external_frag) >= 0, rep
