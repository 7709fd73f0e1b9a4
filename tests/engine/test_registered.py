"""Every registered allocator x every registered scheduler x both preemption modes runs a mixed
workload (plain, parallel sampling, beam search) to the end with its outputs complete and its
pool empty — so a new allocator or scheduler is tested the moment it is registered. The suite sets
``KVLAB_CHECK_INVARIANTS=1``: the engine checks the allocator's invariants after every step."""

from __future__ import annotations

import pytest

from kvlab import debug
from kvlab.allocator import ALLOCATORS
from kvlab.request import SamplingParams
from kvlab.scheduler import SCHEDULERS


def test_the_suite_checks_invariants_every_step():
    assert debug.CHECK_INVARIANTS == 1


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("scheduler", SCHEDULERS.names())
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_mixed_workload_finishes_on_every_registered_pair(engine_factory, allocator, scheduler, preemption):
    # Defaults of each allocator; contiguous's default reserves max_model_len (64 blocks) per sequence.
    eng, ex = engine_factory(num_blocks=200, allocator=allocator, scheduler=scheduler, preemption=preemption,
                             swap_blocks=256, budget=64)
    kinds = [SamplingParams(max_tokens=9, ignore_eos=True), SamplingParams(n=2, max_tokens=7, ignore_eos=True),
             SamplingParams(beam_width=2, max_tokens=5, ignore_eos=True)]
    reqs = [eng.add_request(list(range(1, 6 + 4 * i)), kinds[i % 3]) for i in range(9)]
    for _ in range(2000):
        if not eng.has_unfinished_requests():
            break
        eng.step()
    assert not eng.has_unfinished_requests()
    for r in reqs:
        out = eng.make_output(r)
        want = r.sampling_params.max_tokens
        assert out.finished and len(out.outputs) == r.sampling_params.num_seqs
        assert all(len(c.token_ids) == want and c.finish_reason == "length" for c in out.outputs), out
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
