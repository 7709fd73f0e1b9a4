"""Scheduler + allocator CPU time per engine step, at 256 running requests (pytest-benchmark).

Target (issue 3): <= 1 ms median per step on the 2-core dev machine. Each round is one decode
step of 256 running sequences: ``schedule()`` (token budget, slot allocation for every sequence,
block tables) and ``update_from_output()`` with one sample per sequence (advancing
``num_computed_tokens``, appending the token, stop checks) — everything the scheduler does per
step; the engine adds its records and outputs. Run: ``make bench`` or
``pytest benchmarks/test_engine_bench.py --benchmark-enable``.
"""

from __future__ import annotations

import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.executor.base import Sample, StepOutput
from kvlab.request import Request, SamplingParams, SequenceStatus
from kvlab.scheduler import SCHEDULERS

pytestmark = pytest.mark.benchmark


def _running_scheduler(allocator: str, n: int = 256, prompt: int = 160, block_size: int = 16):
    alloc = ALLOCATORS.build(allocator, 32768, block_size, 2048, **({"reservation": "oracle"}
                                                                   if allocator == "contiguous" else {}))
    sched = SCHEDULERS.build("fcfs", alloc, 2048, max_num_batched_tokens=n, max_num_seqs=n,
                             chunked_prefill=True)
    params = SamplingParams(max_tokens=1024, ignore_eos=True)
    for i in range(n):
        req = Request(f"r{i}", [7] * prompt, params, arrival_time=float(i), expected_output_len=1024)
        seq = req.seqs[0]
        assert alloc.allocate_slots(seq, prompt) is not None
        seq.num_computed_tokens = prompt
        seq.token_ids.append(11)  # the token sampled at the end of the prompt: decode from here
        seq.status = SequenceStatus.RUNNING
        sched.running.append(req)
    return sched


@pytest.mark.parametrize("allocator", ["paged", "prefix", "contiguous"])
def test_step_at_256_running(benchmark, allocator):
    sched = _running_scheduler(allocator)

    sample = [Sample(11, -0.5)]

    def step() -> None:
        out = sched.schedule()
        result = StepOutput({c.seq.seq_id: sample for c in out.chunks}, duration_s=0.0)
        sched.update_from_output(out, result, now=0.0)

    benchmark.pedantic(step, rounds=300, iterations=1, warmup_rounds=5)
    assert len(sched.running) == 256
