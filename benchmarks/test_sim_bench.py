"""Simulator executor CPU time per step (pytest-benchmark).

One decode step of 32 running sequences through :class:`kvlab.executor.sim.SimExecutor`: the cost
model plus sampling. Paper-scale sweeps run hundreds of thousands of such steps, so this is what
bounds a sweep's wall time. Run: ``make bench`` or
``pytest benchmarks/test_sim_bench.py --benchmark-enable``.
"""

from __future__ import annotations

import pytest

from kvlab.executor import EXECUTORS
from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.sim import SimExecutor
from kvlab.request import SamplingParams
from tests.sim.conftest import sim_cfg

pytestmark = pytest.mark.benchmark


def test_sim_decode_step_32_seqs(benchmark) -> None:
    ex = EXECUTORS.build("sim", {**sim_cfg(), "seed": 0})
    assert isinstance(ex, SimExecutor)
    ex.init_cache(ex.kv_capacity_blocks(16), ex.cpu_capacity_blocks(16), 16)
    seqs = [ScheduledSeq(seq_id=i, request_id=f"r{i}", token_ids=[5], start_pos=400 + i,
                         block_table=list(range(-(-(401 + i) // 16))), num_samples=1,
                         sampling=SamplingParams()) for i in range(32)]
    step = StepInput(seqs)
    out = benchmark(ex.execute, step)
    assert len(out.samples) == 32  # the step really sampled every sequence
