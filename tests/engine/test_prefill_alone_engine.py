"""vLLM v0 scheduling through the whole engine: whatever the load, no step mixes prompts with
decodes, every request finishes with its full output, and no block is left behind."""

from __future__ import annotations

import pytest
from fake_executor import FakeExecutor
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.allocator import ALLOCATORS
from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from tests.engine.conftest import make_cfg

BLOCKS = 96


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@settings(max_examples=12, deadline=None)
@given(loads=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 30), st.integers(1, 2)), min_size=1, max_size=14),
       preemption=st.sampled_from(["recompute", "swap"]), max_paddings=st.sampled_from([None, 0, 16]))
def test_prompt_steps_run_alone_and_everything_finishes(allocator, loads, preemption, max_paddings):
    opts = {"reservation": "oracle"} if allocator == "contiguous" else {}
    cfg = make_cfg(allocator=allocator, block_size=4, preemption=preemption, swap_blocks=64, budget=256,
                   chunked=False, **opts)
    cfg["allocator"]["num_blocks"] = BLOCKS
    cfg["scheduler"].update(prefill_alone=True, max_paddings=max_paddings)
    eng = LLMEngine(cfg, executor=FakeExecutor(num_blocks=BLOCKS, max_model_len=128))
    sched, plan = eng.scheduler, eng.scheduler.schedule
    mixed: list[int] = []

    def schedule():  # a step starts prompts (requests that were waiting) or runs the others, never both
        was_waiting = {r.request_id for r in sched.waiting}
        out = plan()
        if len({c.seq.request.request_id in was_waiting for c in out.chunks}) > 1:
            mixed.append(eng.num_steps)
        return out

    sched.schedule = schedule
    reqs = [eng.add_request([7] * p, SamplingParams(n=n, max_tokens=o, ignore_eos=True)) for p, o, n in loads]
    for _ in range(5000):
        if not eng.has_unfinished_requests():
            break
        eng.step()
    assert not eng.has_unfinished_requests() and not mixed, mixed
    for r, (_, o, _) in zip(reqs, loads):
        assert all(s.num_output_tokens == o for s in r.seqs), r
    assert eng.allocator.num_free_blocks() == BLOCKS
