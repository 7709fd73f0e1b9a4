"""The scheduler contract and the state every scheduler shares.

A scheduler decides, each step, which sequences compute how many tokens (the token-budget model:
``num_new_tokens = num_tokens - num_computed_tokens``, capped by the step's budget), asks the
allocator for their slots, and preempts when slots run out. After the executor ran, it applies
the step's results (:meth:`SchedulerBase.update_from_output`). It never touches tensors: its
output is block ids and token counts, which the engine turns into an executor step.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvlab.allocator.base import KVAllocator
from kvlab.commit import Committer, KVOp
from kvlab.registry import Registry
from kvlab.request import Request, Sequence, SequenceStatus, is_decode

if TYPE_CHECKING:  # data types only: the scheduler never calls the executor
    from kvlab.executor.base import StepOutput

log = logging.getLogger(__name__)

SCHEDULERS: Registry[SchedulerBase] = Registry("scheduler")  # short name = conf/scheduler/<name>.yaml


@dataclass
class ScheduledChunk:
    """``num_new_tokens`` tokens of ``seq`` from position ``seq.num_computed_tokens`` on."""

    seq: Sequence
    num_new_tokens: int
    block_table: list[int]


@dataclass
class SchedulerOutput:
    """One step's plan. Everything the step needs travels here; nothing is left in a queue.

    - ``chunks``: what to compute, in batch order (a request's sequences are adjacent);
    - ``blocks_to_copy`` / ``blocks_to_swap_out`` / ``blocks_to_swap_in``: ``(src, dst)`` block
      pairs the executor runs before the forward (fork copies from the previous step first,
      then copy-on-write copies of this step's allocations);
    - ``preempted``: requests preempted this step; ``rejected``: requests the scheduler ended this
      step without running them further (they can never fit the pool), with their sequences
      finished and their blocks freed;
    - token counts: decode tokens are chunks of one token (:func:`kvlab.request.is_decode`).
    """

    chunks: list[ScheduledChunk] = field(default_factory=list)
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_out: list[tuple[int, int]] = field(default_factory=list)
    blocks_to_swap_in: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    rejected: list[Request] = field(default_factory=list)
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0

    @property
    def num_batched_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens


class SchedulerBase(abc.ABC):
    """Queues (waiting, running, swapped) and the post-step update shared by all policies.

    The engine calls, per step, :meth:`schedule` then (after the executor ran)
    :meth:`update_from_output`; between steps :meth:`add_request` and :meth:`abort_request`.
    Subclasses implement :meth:`schedule` only.

    Attributes the engine (and its statistics) read; only the scheduler mutates them:
        waiting: requests not yet admitted (or preempted by recompute), in admission order.
        running: admitted requests holding GPU blocks, oldest arrival first.
        swapped: requests whose KV is in the CPU swap pool, oldest arrival first.
        num_preemptions: preemptions so far (recompute and swap), a counter.
        allocator: the KV allocator (the engine reads its memory report, never its internals).
        max_num_seqs, max_num_batched_tokens: the per-step limits (read-only after construction).

    Args:
        allocator: the KV allocator; the scheduler is its only writer.
        max_model_len: longest sequence in tokens.
        max_num_seqs: sequences in the running batch at most.
        max_num_batched_tokens: tokens computed per step at most.
        watermark: fraction of the pool kept free when admitting (avoids instant preemption).
        committer: applies samples to requests (stop rules, forks, beams); the engine passes one
            that knows the model's EOS token and the tokenizer.
    """

    def __init__(self, allocator: KVAllocator, max_model_len: int, *, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 2560, watermark: float = 0.01,
                 committer: Committer | None = None) -> None:
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
        self.committer = committer if committer is not None else Committer(None, max_model_len)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()
        self.num_preemptions = 0
        # Copies of forks applied by the last update_from_output: the next schedule() emits them
        # first in its SchedulerOutput (the forked KV must exist before the children write).
        self._fork_copies: list[tuple[int, int]] = []

    # -- queue management --
    def add_request(self, req: Request) -> None:
        """Enqueue ``req`` (appends to ``waiting``).

        Raises:
            ValueError: the request's worst case (every sequence growing to prompt + max_tokens,
                capped at the model's max length) needs more blocks than the whole pool holds, so
                it could never finish. Nothing is enqueued then.
        """
        self.check_fits(req)
        self.waiting.append(req)

    def check_fits(self, req: Request) -> None:
        """Raise ``ValueError`` naming the cause if ``req`` can never fit the pool. No mutation."""
        sp = req.sampling_params
        prompt = req.num_prompt_tokens
        max_len = min(prompt + sp.max_tokens, self.max_model_len)
        num_seqs = sp.num_seqs
        need = self.allocator.worst_case_blocks(prompt, max_len, num_seqs)
        if need <= self.allocator.num_blocks:
            return
        bs = self.allocator.block_size
        what = f"prompt {prompt} + max_tokens {sp.max_tokens} tokens"
        if max_len < prompt + sp.max_tokens:
            what += f" (capped at the model's maximum length {self.max_model_len})"
        if num_seqs > 1:
            key = "beam_width" if sp.use_beam_search else "n"
            what += f", times {key}={num_seqs} sequences"
            fix = f"lower max_tokens or {key}"
        else:
            fix = "lower max_tokens or shorten the prompt"
        if self.allocator.worst_case_blocks(prompt, prompt + 1, 1) > self.allocator.num_blocks:
            fix = ("even one sequence's reservation exceeds the pool: shorten the prompt, or use a larger "
                   "pool or an allocator that reserves less")
        elif num_seqs > 1 and self.allocator.worst_case_blocks(prompt, max_len, 1) > self.allocator.num_blocks:
            fix = "lower max_tokens or shorten the prompt"
        nb = self.allocator.num_blocks
        raise ValueError(
            f"request too large for the KV cache: {what} needs up to {need} blocks, but the pool holds "
            f"{nb} blocks of {bs} tokens ({nb * bs} tokens); {fix}")

    def has_unfinished_requests(self) -> bool:
        """Whether any queue holds a request. No mutation."""
        return bool(self.waiting or self.running or self.swapped)

    def num_running_seqs(self) -> int:
        """Live sequences of the running requests. No mutation."""
        return sum(len(r.live_seqs()) for r in self.running)

    def abort_request(self, request_id: str) -> Request | None:
        """Remove a request from whichever queue holds it, mark its unfinished sequences aborted
        and free their blocks. Returns it, or ``None`` if no queue holds it (idempotent)."""
        for queue in (self.running, self.waiting, self.swapped):
            for req in queue:
                if req.request_id == request_id:
                    queue.remove(req)
                    self._end(req, SequenceStatus.FINISHED_ABORTED)
                    return req
        return None

    # -- the step --
    @abc.abstractmethod
    def schedule(self) -> SchedulerOutput:
        """Pick this step's work. Mutates the queues, the allocator (slots, swaps, frees of
        preempted or rejected requests), sequence statuses, and ``num_computed_tokens`` of prefix
        hits and of recompute-preempted sequences — never of the tokens it schedules
        (:meth:`update_from_output` advances those once they are computed)."""

    def update_from_output(self, out: SchedulerOutput, result: StepOutput, now: float) -> list[Request]:
        """Apply one executed step: advance ``num_computed_tokens`` of every scheduled chunk,
        commit the samples (tokens, stop rules, forks, beam pruning via the committer), apply the
        resulting allocator forks and frees, stamp ``first_scheduled_time`` / ``first_token_time``
        and drop finished requests from ``running``.

        Fault isolation: if committing one request raises, that request alone ends with finish
        reason "error" (its blocks freed, ``finish_detail`` set) and the others go on.

        Args:
            out: what :meth:`schedule` returned for this step.
            result: the executor's samples and duration for it.
            now: the engine clock after the step (seconds).

        Returns:
            The requests that finished this step — ``out.rejected`` first, then those whose last
            sequence finished (or failed), in batch order. Their blocks are already free.
        """
        finished = list(out.rejected)
        touched: dict[str, Request] = {}
        for chunk in out.chunks:
            chunk.seq.num_computed_tokens += chunk.num_new_tokens
            req = chunk.seq.request
            touched[req.request_id] = req
        samples = result.samples
        started = now - result.duration_s
        commit = self.committer.commit
        for req in touched.values():
            if req.first_scheduled_time is None:
                req.first_scheduled_time = started
            ops: list[KVOp] = []
            try:
                if commit(req, samples, now, ops) and req.first_token_time is None:
                    req.first_token_time = now
                if ops:
                    self._apply(ops)
            except Exception as exc:  # noqa: BLE001  one request's failure must not end the batch
                self._fail(req, exc, ops)
            seqs = req.seqs
            if seqs[0].status.finished if len(seqs) == 1 else req.is_finished:
                self.running.remove(req)
                finished.append(req)
        return finished

    def _apply(self, ops: list[KVOp]) -> None:
        """Apply the committer's KV operations in order: forks (copies kept for the next
        :meth:`schedule`) and frees."""
        alloc = self.allocator
        for seq, child in ops:
            if child is None:
                alloc.free(seq)
            else:
                copies = alloc.fork(seq, child)
                if copies:
                    self._fork_copies.extend(copies)

    def _end(self, req: Request, status: SequenceStatus) -> None:
        """Finish every unfinished sequence of ``req`` with ``status`` and free its blocks."""
        for seq in req.seqs:
            if not seq.is_finished:
                self.allocator.free(seq)
                seq.status = status

    def _fail(self, req: Request, exc: Exception, ops: list[KVOp]) -> None:
        """End ``req`` alone with finish reason "error", freeing every block it may still hold
        (including sequences of a half-applied update: freeing an unknown sequence is a no-op)."""
        log.exception("request %s failed in the step's update; finishing it alone", req.request_id)
        req.finish_detail = f"internal error while processing this request: {type(exc).__name__}: {exc}"
        for seq, child in ops:
            self.allocator.free(seq)
            if child is not None:
                self.allocator.free(child)
        for seq in req.seqs:  # the whole request reports the error, even sequences that had stopped
            self.allocator.free(seq)
            seq.status = SequenceStatus.FINISHED_ERROR

    def _new_output(self) -> SchedulerOutput:
        """A fresh output carrying the fork copies of the last update (they run first)."""
        out = SchedulerOutput()
        if self._fork_copies:
            out.blocks_to_copy, self._fork_copies = self._fork_copies, []
        return out

    # -- helpers for policies --
    def _count(self, chunk: ScheduledChunk, out: SchedulerOutput) -> None:
        out.chunks.append(chunk)
        if is_decode(chunk.num_new_tokens):
            out.num_decode_tokens += 1
        else:
            out.num_prefill_tokens += chunk.num_new_tokens

    def _can_admit(self, num_blocks_needed: int) -> bool:
        return self.allocator.num_free_blocks() - num_blocks_needed >= self.watermark_blocks

    def _blocks_for(self, num_tokens: int) -> int:
        bs = self.allocator.block_size
        return -(-num_tokens // bs)
