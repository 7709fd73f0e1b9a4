"""The executor contract: run one scheduled step, return sampled tokens and the step's duration.

The executor sees block tables, slot positions and token ids — never allocator internals.
``ScheduledSeq`` is everything it needs about one sequence in the batch; ``StepInput`` is the
whole step (plus the block copies and swaps the scheduler asked for, to run before the forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kvlab.request import SamplingParams, is_decode


@dataclass
class ScheduledSeq:
    """One sequence's share of a step.

    The executor computes KV for ``token_ids`` at positions ``start_pos .. start_pos+len-1``,
    writing them into ``block_table`` (slot of position p = block_table[p // B] * B + p % B),
    attending to every earlier position of the same table. When ``num_samples > 0`` the
    logits of the last position are sampled ``num_samples`` times (independently; > 1 only at the
    end of a prompt of a parallel-sampling request) or, for beam search, ``num_samples`` is the
    number of best candidates wanted (2 x beam width), returned in descending logprob order.
    """

    seq_id: int
    request_id: str
    token_ids: list[int]
    start_pos: int
    block_table: list[int]
    num_samples: int
    sampling: SamplingParams
    sample_index: int = 0  # how many tokens this sequence has sampled before (seeded RNG stream)
    beam: bool = False

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def is_decode(self) -> bool:
        """One new token against the cached context (:func:`kvlab.request.is_decode`)."""
        return is_decode(len(self.token_ids))

    @property
    def context_len(self) -> int:
        """Tokens attended to by the last new token (including itself)."""
        return self.start_pos + len(self.token_ids)


@dataclass
class StepInput:
    seqs: list[ScheduledSeq]
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)  # GPU src -> GPU dst
    blocks_to_swap_out: list[tuple[int, int]] = field(default_factory=list)  # GPU -> CPU
    blocks_to_swap_in: list[tuple[int, int]] = field(default_factory=list)  # CPU -> GPU

    @property
    def num_batched_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)


@dataclass
class Sample:
    """One sampled token with its logprob and, if asked, the top alternatives {token: logprob}."""

    token_id: int
    logprob: float
    top_logprobs: dict[int, float] | None = None


@dataclass
class StepOutput:
    """Per sequence id, the samples drawn (empty list for prefill chunks that sample nothing).

    ``duration_s`` is the time the step took: measured wall time for real executors, the cost
    model's prediction for the simulator. ``swap_time_s`` is the part of it spent copying blocks
    between CPU and GPU (reported separately for the paper's Fig. 19). ``device_stats`` is a
    sampled device reading (``gpu_memory_used_bytes``, ``gpu_utilization_pct``) or None where the
    executor has none (CPU, simulator).
    """

    samples: dict[int, list[Sample]]
    duration_s: float
    swap_time_s: float = 0.0
    device_stats: dict[str, float] | None = None


class Executor(Protocol):
    """Runs steps. ``kv_capacity_blocks(block_size)`` tells how many KV blocks the memory budget
    gives (the engine sizes the pool with it unless ``allocator.num_blocks`` overrides it)."""

    max_model_len: int
    eos_token_id: int | None
    virtual_time: bool  # True: durations are modelled, the engine runs a virtual clock (optional attr)

    def kv_capacity_blocks(self, block_size: int) -> int: ...

    def kv_bytes_per_block(self, block_size: int) -> int: ...

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None: ...

    def execute(self, step: StepInput) -> StepOutput: ...
