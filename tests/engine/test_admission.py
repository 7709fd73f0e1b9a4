"""Issue 17, engine side: admission that can always finish, and per-request fault isolation.

Every test runs for each registered allocator and both preemption modes where it matters, over the
tensor-free fake executor (the engine checks allocator invariants after every step in the suite).
"""

from __future__ import annotations

import pytest
from fake_executor import FakeExecutor

from kvlab.allocator import ALLOCATORS
from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from tests.engine.conftest import make_cfg

PREEMPTION = ["recompute", "swap"]


def engine(allocator: str, num_blocks: int, block_size: int = 16, max_model_len: int = 2048,
           preemption: str = "recompute", swap_blocks: int = 256) -> LLMEngine:
    opts = {"reservation": "oracle"} if allocator == "contiguous" else {}
    cfg = make_cfg(allocator=allocator, block_size=block_size, preemption=preemption,
                   swap_blocks=swap_blocks, budget=512, **opts)
    cfg["allocator"]["num_blocks"] = num_blocks
    return LLMEngine(cfg, executor=FakeExecutor(num_blocks=num_blocks, max_model_len=max_model_len))


def drain(eng: LLMEngine, max_steps: int = 5000) -> int:
    for i in range(max_steps):
        if not eng.has_unfinished_requests():
            return i
        eng.step()
    raise AssertionError("the engine stalled: requests left after max_steps")


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("preemption", PREEMPTION)
def test_oversize_parallel_request_is_refused_up_front_and_names_n(allocator, preemption):
    # issue 17 reproducer: allocator.num_blocks=64, n=8, max_tokens=256
    eng = engine(allocator, 64, preemption=preemption)
    with pytest.raises(ValueError, match=r"n=8") as err:
        eng.add_request(list(range(1, 9)), SamplingParams(n=8, max_tokens=256, ignore_eos=True))
    assert "64 blocks" in str(err.value) and "lower max_tokens or n" in str(err.value)
    assert not eng.has_unfinished_requests() and not eng.requests
    assert eng.allocator.num_free_blocks() == 64


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("preemption", PREEMPTION)
def test_oversize_single_request_is_refused_without_blaming_n(allocator, preemption):
    # issue 17 reproducers: n=1, max_tokens=1224 with 64 blocks of 16 (swap stalled, recompute ran
    # ~1,000 tokens and threw them away): now refused before a single step runs.
    eng = engine(allocator, 64, preemption=preemption)
    with pytest.raises(ValueError) as err:
        eng.add_request(list(range(1, 9)), SamplingParams(max_tokens=1224, ignore_eos=True))
    msg = str(err.value)
    assert "prompt 8 + max_tokens 1224" in msg and "64 blocks of 16 tokens" in msg
    assert "n=" not in msg and " x n" not in msg and "lower max_tokens or shorten the prompt" in msg
    assert eng.num_steps == 0


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("preemption", PREEMPTION)
def test_refused_request_does_not_block_the_others(allocator, preemption):
    eng = engine(allocator, 64, block_size=4, max_model_len=256, preemption=preemption)
    small = [eng.add_request(list(range(1, 6)), SamplingParams(max_tokens=8, ignore_eos=True)) for _ in range(3)]
    with pytest.raises(ValueError):
        eng.add_request(list(range(1, 6)), SamplingParams(n=16, max_tokens=200, ignore_eos=True))
    small.append(eng.add_request(list(range(1, 6)), SamplingParams(max_tokens=8, ignore_eos=True)))
    drain(eng)
    assert [r.seqs[0].num_output_tokens for r in small] == [8, 8, 8, 8]
    assert eng.allocator.num_free_blocks() == 64


@pytest.mark.parametrize("allocator", ["paged", "prefix"])
def test_swapped_group_resumes_when_the_pool_can_hold_it(allocator):
    # A 4-sample group shares its 6 prompt blocks; counted per sequence (the old swap-in test) it
    # looked bigger than the whole pool and never came back. Its worst case (6 + 4 x 4 = 22
    # blocks) fits the 24-block pool, so it must run to the end.
    eng = engine(allocator, 24, block_size=4, max_model_len=256, preemption="swap")
    first = eng.add_request(list(range(1, 30)), SamplingParams(max_tokens=12, ignore_eos=True))
    group = eng.add_request(list(range(100, 124)), SamplingParams(n=4, max_tokens=16, ignore_eos=True))
    drain(eng)
    assert first.seqs[0].num_output_tokens == 12
    assert sorted(s.num_output_tokens for s in group.seqs) == [16, 16, 16, 16]
    assert group.num_preemptions >= 1 and sum(r.swapped_out_blocks for r in eng.step_records) > 0
    assert eng.allocator.num_free_blocks() == 24


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("preemption", PREEMPTION)
def test_mixed_load_at_the_edge_of_the_pool_always_finishes(allocator, preemption):
    eng = engine(allocator, 128, block_size=4, max_model_len=256, preemption=preemption)
    reqs = []
    for i in range(12):
        n = 1 + i % 3
        reqs.append(eng.add_request(list(range(1, 10 + 5 * i)), SamplingParams(n=n, max_tokens=20 + 3 * i,
                                                                                ignore_eos=True)))
    drain(eng)
    for i, r in enumerate(reqs):
        assert all(s.num_output_tokens == 20 + 3 * i for s in r.seqs), r
    assert eng.allocator.num_free_blocks() == 128


def test_a_reservation_larger_than_the_pool_is_named_as_the_cause():
    cfg = make_cfg(allocator="contiguous", block_size=16, reservation="max")
    cfg["allocator"]["num_blocks"] = 64  # max_model_len 2048 = 128 blocks reserved per sequence
    eng = LLMEngine(cfg, executor=FakeExecutor(num_blocks=64, max_model_len=2048))
    with pytest.raises(ValueError, match="even one sequence's reservation exceeds the pool"):
        eng.add_request([1, 2, 3], SamplingParams(max_tokens=4))


def test_top_k_is_clamped_and_token_ids_checked_against_the_vocabulary():
    eng = engine("paged", 64)
    vocab = eng.vocab_size
    assert vocab == FakeExecutor.vocab_size
    req = eng.add_request([1, 2, 3], SamplingParams(top_k=10**20, max_tokens=2))
    assert req.sampling_params.top_k == vocab
    with pytest.raises(ValueError, match=r"stop_token_ids contains 1000000000, outside the vocabulary"):
        eng.add_request([1, 2, 3], SamplingParams(stop_token_ids=[10**9], min_tokens=1))
    with pytest.raises(ValueError, match="prompt token id"):
        eng.add_request([1, vocab + 5], SamplingParams())
    big = eng.add_request([1, 2], SamplingParams(seed=10**30, max_tokens=1))  # any integer seeds (63 bits used)
    assert big.sampling_params.seed == 10**30 % 2**63
    with pytest.raises(ValueError, match="seed"):
        eng.add_request([1, 2], SamplingParams(seed=1.5))  # type: ignore[arg-type]
    drain(eng)
    assert req.seqs[0].num_output_tokens == 2


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
def test_one_failing_request_ends_alone_and_the_batch_goes_on(allocator, monkeypatch):
    eng = engine(allocator, 128, block_size=4, max_model_len=256)
    reqs = [eng.add_request(list(range(1, 12)), SamplingParams(n=1 + i % 2, max_tokens=6, ignore_eos=True),
                            request_id=f"r{i}") for i in range(4)]
    committer = eng.scheduler.committer
    real = committer.stop_status

    def stop_status(seq):
        if seq.request.request_id == "r1" and seq.num_output_tokens == 3:
            raise RuntimeError("boom")
        return real(seq)

    monkeypatch.setattr(committer, "stop_status", stop_status)
    finished = []
    while eng.has_unfinished_requests():
        finished += [o for o in eng.step() if o.finished]
    by_id = {o.request_id: o for o in finished}
    assert set(by_id) == {"r0", "r1", "r2", "r3"}
    assert {c.finish_reason for c in by_id["r1"].outputs} == {"error"}
    assert "RuntimeError: boom" in reqs[1].finish_detail and by_id["r1"].finish_detail == reqs[1].finish_detail
    for rid in ("r0", "r2", "r3"):
        assert all(c.finish_reason == "length" and len(c.token_ids) == 6 for c in by_id[rid].outputs)
    assert eng.allocator.num_free_blocks() == 128
