"""Iteration-level FCFS scheduling (Orca / vLLM): continuous batching with a token budget.

Each step: (1) running requests, oldest first, get their next tokens (decodes, or the next
chunk of a prompt); when the allocator runs out of blocks the latest-arrived running request is
preempted (recompute: blocks freed, tokens recomputed later; swap: KV moved to the CPU pool, all
or nothing per request). (2) If nothing was preempted, swapped requests come back first, then
(3) waiting requests are admitted in arrival order while blocks above the watermark, the token
budget and ``max_num_seqs`` allow — and, as in the paper, none while any request is swapped out.
With ``prefill_alone`` (vLLM v0's default scheduler, 2023-24) admission comes first, and a step that starts
prompts runs no decodes; decodes run in the steps where no waiting request can start.

Progress is guaranteed: a request whose worst case can never fit the pool is refused by
``add_request``; one that still cannot grow while it is the only request running (nothing left to
preempt) ends with finish reason "length" (``FINISHED_CAPACITY``) instead of preempting itself
forever; a swapped group comes back whenever the pool can hold it, watermark or not, once nothing
else is running.

The sequences of one request (parallel samples, beams) are scheduled together or not at all.
"""

from __future__ import annotations

import bisect

from kvlab.allocator.base import NO_NEW_BLOCKS, KVAllocator
from kvlab.request import Request, SequenceStatus, is_decode
from kvlab.scheduler.base import SCHEDULERS, ScheduledChunk, SchedulerBase, SchedulerOutput

PREEMPTION_MODES = ("recompute", "swap")


def _arrival(req: Request) -> float:
    return req.arrival_time


class FCFSScheduler(SchedulerBase):
    def __init__(self, allocator: KVAllocator, max_model_len: int, *, chunked_prefill: bool = True,
                 preemption: str = "recompute", prefill_alone: bool = False, max_paddings: int | None = None,
                 **kw: int | float) -> None:
        super().__init__(allocator, max_model_len, **kw)  # type: ignore[arg-type]
        if preemption not in PREEMPTION_MODES:
            raise ValueError(f"scheduler.preemption={preemption!r}; choose one of {PREEMPTION_MODES}")
        if not chunked_prefill and self.max_num_batched_tokens < max_model_len:
            raise ValueError(
                f"scheduler.max_num_batched_tokens={self.max_num_batched_tokens} is smaller than the "
                f"max model length {max_model_len}: a long prompt could never be scheduled. Set "
                "scheduler.chunked_prefill=true or raise max_num_batched_tokens (or kv.max_model_len).")
        if prefill_alone and chunked_prefill:
            raise ValueError("scheduler.prefill_alone=true runs whole prompts in steps of their own (vLLM v0); "
                             "it needs scheduler.chunked_prefill=false")
        if max_paddings is not None and (not prefill_alone or max_paddings < 0):
            raise ValueError(f"scheduler.max_paddings={max_paddings}: padded prompt batches (vLLM v0.2.2-v0.2.7) "
                             "need scheduler.prefill_alone=true and a value >= 0 (null = no padding)")
        self.chunked_prefill = chunked_prefill
        self.preemption = preemption
        self.prefill_alone = prefill_alone
        self.max_paddings = max_paddings

    # -- hooks for subclasses --
    def _admission_open(self) -> bool:
        """May waiting requests be admitted this step? (FCFS: unless a request is swapped out.)"""
        return not self.swapped

    def _order_waiting(self) -> None:
        """Reorder ``self.waiting`` before admission (FCFS keeps arrival order)."""

    # -- the step --
    def schedule(self) -> SchedulerOutput:
        out = self._new_output()
        budget = self.max_num_batched_tokens
        if self.prefill_alone and self.waiting and self._admission_open():
            self._admit(budget, out)  # vLLM v0: a step that starts prompts runs nothing else
            if out.chunks:
                return out
        i = 0
        while i < len(self.running):
            req = self.running[i]
            got = self._schedule_running(req, budget, out)
            if got is None:  # req itself was preempted
                continue
            budget -= got
            i += 1
        if not out.preempted:
            budget = self._swap_in(budget, out)
            if self._admission_open() and not self.prefill_alone:
                self._admit(budget, out)
        return out

    def _schedule_running(self, req: Request, budget: int, out: SchedulerOutput,
                          may_preempt: bool = True) -> int | None:
        """Schedule one running request's sequences. Returns tokens used (0: not this step), or
        None if it was preempted to make room for itself."""
        if len(req.seqs) == 1:  # the common case, kept cheap: it runs for every request every step
            seq = req.seqs[0]
            n = seq.num_tokens - seq.num_computed_tokens
            if n > budget and n > 1 and self.chunked_prefill:
                n = budget
            todo = [(seq, n)]
            need = n
        else:
            todo = [(s, s.num_tokens - s.num_computed_tokens) for s in req.live_seqs()]
            need = sum(n for _, n in todo)
        if need == 0 or need > budget:
            return 0
        chunks = []
        alloc = self.allocator
        for seq, n in todo:
            while (got := alloc.allocate_slots(seq, n)) is None:
                if not may_preempt:
                    return 0
                victim = self.running[-1]
                if victim is req and len(self.running) == 1:
                    self._outgrown(req, out)  # nothing left to preempt: it can never grow here
                    return None
                self._preempt(victim, out)
                if victim is req:
                    return None
            if got is not NO_NEW_BLOCKS and got.copies:  # identity first: the decode fast path
                out.blocks_to_copy.extend(got.copies)
            chunks.append(ScheduledChunk(seq, n, alloc.block_table(seq)))
        emitted = out.chunks
        for c in chunks:  # SchedulerBase._count, inlined: this runs for every sequence every step
            emitted.append(c)
            if is_decode(c.num_new_tokens):
                out.num_decode_tokens += 1
            else:
                out.num_prefill_tokens += c.num_new_tokens
        return need

    def _outgrown(self, req: Request, out: SchedulerOutput) -> None:
        """End the only running request, which cannot get the slots for its next tokens even with
        every other request out of the way, with finish reason "length"."""
        self.running.remove(req)
        req.finish_detail = (f"stopped at {max(s.num_tokens for s in req.live_seqs())} tokens: the KV cache "
                             f"({self.allocator.num_blocks} blocks of {self.allocator.block_size} tokens) "
                             "cannot hold this request's next token")
        self._end(req, SequenceStatus.FINISHED_CAPACITY)
        out.rejected.append(req)

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.running.remove(req)
        req.num_preemptions += 1
        self.num_preemptions += 1
        out.preempted.append(req)
        live = req.live_seqs()
        # Multi-sequence groups prefer swap (their forked KV cannot be recomputed as one prompt).
        if self.preemption == "swap" or len(live) > 1:
            pairs = self.allocator.swap_out(live)
            if pairs is not None:
                for s in live:
                    s.status = SequenceStatus.SWAPPED
                out.blocks_to_swap_out.extend(pairs)
                bisect.insort(self.swapped, req, key=_arrival)
                return
        for s in live:  # recompute (also the fallback when the swap pool is full)
            self.allocator.free(s)
            s.num_computed_tokens = 0
            s.status = SequenceStatus.WAITING
        self.waiting.appendleft(req)

    def _swap_in(self, budget: int, out: SchedulerOutput) -> int:
        while self.swapped:
            req = self.swapped[0]
            live = req.live_seqs()
            if budget < len(live):
                break
            # An upper bound (blocks shared inside the group count once per sequence): when it
            # fails and nothing else runs, try anyway — swap_in itself says whether the group fits.
            blocks = sum(self._blocks_for(s.num_tokens) for s in live)
            if self.running and not self._can_admit(blocks):
                break
            pairs = self.allocator.swap_in(live)
            if pairs is None:
                break
            self.swapped.popleft()
            out.blocks_to_swap_in.extend(pairs)
            for s in live:
                s.status = SequenceStatus.RUNNING
            bisect.insort(self.running, req, key=_arrival)
            got = self._schedule_running(req, budget, out, may_preempt=False)
            budget -= got or 0
        return budget

    def _admit(self, budget: int, out: SchedulerOutput) -> None:
        self._order_waiting()
        num_seqs = self.num_running_seqs()
        lens: list[int] = []  # prompt lengths admitted this step (kept for max_paddings only)
        while self.waiting and budget > 0:
            req = self.waiting[0]
            live = req.live_seqs()
            if num_seqs + req.sampling_params.num_seqs > self.max_num_seqs and self.running:
                break
            plans = []
            for seq in live:
                computed = self.allocator.get_computed_blocks(seq) if seq.num_computed_tokens == 0 else ([], 0)
                n = seq.num_tokens - seq.num_computed_tokens - computed[1]
                plans.append((seq, computed, n))
            need = sum(n for _, _, n in plans)
            if self.max_paddings is not None and self._padding_stops(lens, [n for _, _, n in plans]):
                break
            if need > budget:
                if not (self.chunked_prefill and len(plans) == 1):
                    break
                plans = [(plans[0][0], plans[0][1], budget)]
                need = budget
            blocks_needed = sum(self._blocks_for(s.num_computed_tokens + c[1] + n) - len(c[0])
                                for s, c, n in plans)
            if not self._can_admit(blocks_needed) and (self.running or self.swapped):
                break
            chunks = self._allocate_group(plans, out)
            if chunks is None:
                if self._reject_if_infeasible(req, out):
                    continue
                break
            self._start(req, live, chunks, out)
            budget -= need
            num_seqs += len(live)
            if self.max_paddings is not None:
                lens += [n for _, _, n in plans]

    def _padding_stops(self, lens: list[int], new: list[int]) -> bool:
        """vLLM v0.2.2-v0.2.7 padded a step's prompts to the longest: its token budget counted
        padded tokens, and the padding itself was capped at ``max_paddings``."""
        allv = lens + new
        padded = len(allv) * max(allv)
        return bool(lens) and (padded > self.max_num_batched_tokens
                               or padded - sum(allv) > self.max_paddings)  # type: ignore[operator]

    def _allocate_group(self, plans: list, out: SchedulerOutput) -> list[ScheduledChunk] | None:
        """Allocate every sequence of a request being admitted, or none of them (atomic)."""
        saved = [(s, s.num_computed_tokens, s.num_cached_tokens) for s, _, _ in plans]
        chunks: list[ScheduledChunk] = []
        copies: list[tuple[int, int]] = []
        for seq, computed, n in plans:
            got = self.allocator.allocate_slots(seq, n, computed if computed[1] else None)
            if got is None:
                for s, num_computed, num_cached in saved[: len(chunks)]:
                    self.allocator.free(s)
                    s.num_computed_tokens, s.num_cached_tokens = num_computed, num_cached
                return None
            copies.extend(got.copies)
            seq.num_computed_tokens += computed[1]
            seq.num_cached_tokens = computed[1]
            chunks.append(ScheduledChunk(seq, n, self.allocator.block_table(seq)))
        out.blocks_to_copy.extend(copies)
        return chunks

    def _start(self, req: Request, live: list, chunks: list[ScheduledChunk], out: SchedulerOutput) -> None:
        self.waiting.popleft()
        if req.first_scheduled_time is None:
            req.num_cached_tokens = sum(s.num_cached_tokens for s in live)
        for seq in live:
            seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, req, key=_arrival)
        for c in chunks:
            self._count(c, out)

    def _reject_if_infeasible(self, req: Request, out: SchedulerOutput) -> bool:
        """A request that does not fit into an otherwise empty pool never will (a case the
        worst-case check at ``add_request`` cannot see, e.g. buddy placement of a pool whose size
        is no power of two): end it instead of waiting forever. It travels in ``out.rejected``
        with finish reason "abort"."""
        if self.running or self.swapped:
            return False
        self.waiting.remove(req)
        req.finish_detail = (f"the KV cache ({self.allocator.num_blocks} blocks of {self.allocator.block_size} "
                             "tokens) cannot place this request even when empty")
        self._end(req, SequenceStatus.FINISHED_ABORTED)
        out.rejected.append(req)
        return True


@SCHEDULERS.register("fcfs")
def _build_fcfs(allocator: KVAllocator, max_model_len: int, **options: object) -> FCFSScheduler:
    return FCFSScheduler(allocator, max_model_len, **options)  # type: ignore[arg-type]
