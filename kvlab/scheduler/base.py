"""The scheduler contract and the state every scheduler shares.

A scheduler decides, each step, which sequences compute how many tokens (the token-budget model:
``num_new_tokens = num_tokens - num_computed_tokens``, capped by the step's budget), asks the
allocator for their slots, and preempts when slots run out. It never touches tensors: its output
is block ids and token counts, which the engine turns into an executor step.
"""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass, field

from kvlab.allocator.base import KVAllocator
from kvlab.request import Request, Sequence, SequenceStatus


@dataclass
class ScheduledChunk:
    """``num_new_tokens`` tokens of ``seq`` from position ``seq.num_computed_tokens`` on."""

    seq: Sequence
    num_new_tokens: int
    block_table: list[int]


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_out: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_in: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0

    @property
    def num_batched_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens

    @property
    def is_empty(self) -> bool:
        return not self.chunks and not self.blocks_to_swap_out


class SchedulerBase(abc.ABC):
    """Queues (waiting, running, swapped) and the bookkeeping shared by all policies.

    Subclasses implement :meth:`schedule`. The engine calls :meth:`update_after_step` after the
    executor ran, then commits tokens and calls :meth:`free_seq`, :meth:`fork_seq`,
    :meth:`finish_request` as sequences fork and finish.
    """

    def __init__(self, allocator: KVAllocator, max_model_len: int, *, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 2560, watermark: float = 0.01) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"scheduler.max_num_seqs must be >= 1, got {max_num_seqs}")
        if max_num_batched_tokens < 1:
            raise ValueError(
                f"scheduler.max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"scheduler.watermark must be in [0, 1), got {watermark}")
        self.allocator = allocator
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.watermark_blocks = int(watermark * allocator.num_blocks)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()
        self.num_preemptions = 0
        self.rejected: list[Request] = []  # aborted by the scheduler; the engine drains this

    # -- queue management --
    def add_request(self, req: Request) -> None:
        self.waiting.append(req)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def num_running_seqs(self) -> int:
        return sum(len(r.live_seqs()) for r in self.running)

    def abort_request(self, request_id: str) -> Request | None:
        """Remove a request from whichever queue holds it and free its blocks (idempotent)."""
        for queue in (self.running, self.waiting, self.swapped):
            for req in queue:
                if req.request_id == request_id:
                    queue.remove(req)
                    for seq in req.seqs:
                        if not seq.is_finished:
                            self.allocator.free(seq)
                            seq.status = SequenceStatus.FINISHED_ABORTED
                    return req
        return None

    # -- commit-time hooks called by the engine --
    def update_after_step(self, out: SchedulerOutput) -> None:
        """Advance ``num_computed_tokens`` of everything that was computed this step."""
        for chunk in out.chunks:
            chunk.seq.num_computed_tokens += chunk.num_new_tokens

    def fork_seq(self, parent: Sequence) -> Sequence:
        """A new sequence of the parent's request sharing its KV (allocator fork)."""
        child = parent.fork()
        self.allocator.fork(parent, child)
        parent.request.seqs.append(child)
        return child

    def free_seq(self, seq: Sequence, status: SequenceStatus) -> None:
        seq.status = status
        self.allocator.free(seq)

    def finish_request(self, req: Request) -> None:
        """Drop a request whose sequences are all finished (blocks already freed)."""
        if req in self.running:
            self.running.remove(req)

    # -- helpers for policies --
    def _tokens_to_compute(self, seq: Sequence) -> int:
        return seq.num_tokens - seq.num_computed_tokens

    def _can_admit(self, num_blocks_needed: int) -> bool:
        return self.allocator.num_free_blocks() - num_blocks_needed >= self.watermark_blocks

    def _blocks_for(self, num_tokens: int) -> int:
        bs = self.allocator.block_size
        return -(-num_tokens // bs)

    @abc.abstractmethod
    def schedule(self) -> SchedulerOutput:
        """Pick this step's work; mutates queues, allocator state and ``num_computed_tokens`` of
        prefix hits (never of scheduled tokens: :meth:`update_after_step` does that)."""
