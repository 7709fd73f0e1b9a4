"""Drive a scheduler directly (no engine, no executor): schedule, sample one token per finished
chunk, update_from_output."""

from __future__ import annotations

from kvlab.allocator import ALLOCATORS
from kvlab.executor.base import Sample, StepOutput
from kvlab.request import Request, SamplingParams
from kvlab.scheduler import SCHEDULERS, SchedulerBase, SchedulerOutput


def make(scheduler: str = "fcfs", allocator: str = "paged", num_blocks: int = 8, block_size: int = 4,
         cpu_blocks: int = 0, max_model_len: int = 64, **options) -> SchedulerBase:
    alloc = ALLOCATORS.build(allocator, num_blocks, block_size, max_model_len, num_cpu_blocks=cpu_blocks)
    options.setdefault("watermark", 0.0)
    return SCHEDULERS.build(scheduler, alloc, max_model_len, **options)


def req(rid: str, prompt: list[int], max_tokens: int = 8, t: float = 0.0, **sp) -> Request:
    return Request(rid, prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True, **sp), arrival_time=t)


def step(s: SchedulerBase, token: int = 7) -> tuple[SchedulerOutput, list[Request]]:
    """One step; every chunk that reaches the end of its sequence samples ``token``."""
    out = s.schedule()
    samples = {c.seq.seq_id: [Sample(token, -1.0)] for c in out.chunks
               if c.seq.num_computed_tokens + c.num_new_tokens == c.seq.num_tokens}
    finished = s.update_from_output(out, StepOutput(samples, duration_s=0.001), now=0.0)
    s.allocator.check_invariants()
    return out, finished


def ids(reqs) -> list[str]:
    return [r.request_id for r in reqs]


def chunk_ids(out: SchedulerOutput) -> list[tuple[str, int]]:
    return [(c.seq.request.request_id, c.num_new_tokens) for c in out.chunks]


def table(s: SchedulerBase, r: Request) -> list[int]:
    return list(s.allocator.block_table(r.seqs[0]))
