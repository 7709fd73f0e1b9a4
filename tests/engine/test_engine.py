"""End-to-end engine behaviour over the real allocators and schedulers (fake executor).

Before every step, the KV the fake cache holds for each scheduled sequence, read through its block
table, must equal the sequence's tokens up to where the step starts: this checks copy-on-write, fork copies and
swapping move the data with the blocks, not just the ids.
"""

from __future__ import annotations

import pytest

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams


def run_checked(eng: LLMEngine, ex, max_steps: int = 3000) -> None:
    def check(seq_id: int, cached: list) -> None:
        seq = next(s for r in eng.requests.values() for s in r.seqs if s.seq_id == seq_id)
        assert cached == seq.token_ids[: len(cached)], seq

    ex.check_context = check
    for _ in range(max_steps):
        if not eng.has_unfinished_requests():
            return
        eng.step()
        eng.allocator.check_invariants()
    raise AssertionError("engine did not finish")


ALLOCS = [("paged", {}), ("prefix", {}), ("prefix", {"index": "radix", "eviction": "lru-depth"}),
          ("prefix", {"eviction": "fifo"}), ("contiguous", {"reservation": "oracle"}),
          ("contiguous", {"reservation": "max", "placement": "buddy"})]


@pytest.mark.parametrize("alloc,opts", ALLOCS)
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_tiny_budget_every_request_finishes_with_full_output(engine_factory, alloc, opts, preemption):
    max_len_blocks = 256 // 4
    num_blocks = max_len_blocks + 8 if opts.get("reservation") == "max" else 24
    eng, ex = engine_factory(num_blocks=num_blocks, allocator=alloc, preemption=preemption,
                             swap_blocks=256, **opts)
    for i in range(10):
        eng.add_request(list(range(1, 12 + 3 * i)), SamplingParams(max_tokens=15 + i, ignore_eos=True),
                        expected_output_len=15 + i)
    run_checked(eng, ex)
    recs = {r.request_id: r for r in eng.request_records}
    assert len(recs) == 10
    for i in range(10):
        assert recs[f"req-{i}"].output_len == 15 + i
        assert recs[f"req-{i}"].finish_reason == "length"
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
    if alloc == "paged":
        assert sum(r.num_preemptions for r in recs.values()) > 0  # the budget really forced preemption
        if preemption == "swap":
            assert sum(s.swapped_out_blocks for s in eng.step_records) > 0


@pytest.mark.parametrize("alloc", ["paged", "prefix", "contiguous"])
def test_parallel_sampling_shares_prompt_blocks(engine_factory, alloc):
    opts = {"reservation": "oracle"} if alloc == "contiguous" else {}
    eng, ex = engine_factory(num_blocks=64, allocator=alloc, block_size=4, **opts)
    eng.add_request(list(range(1, 31)), SamplingParams(n=4, max_tokens=12, ignore_eos=True))
    run_checked(eng, ex)
    (rec,) = eng.request_records
    assert rec.num_seqs == 4 and rec.total_output_tokens == 48
    saved = max(s.shared_saved_slots for s in eng.step_records)
    if alloc == "contiguous":
        assert saved == 0  # contiguous cannot share: fork copies
    else:
        assert saved >= 3 * 28  # 7 full prompt blocks shared by 4 sequences


@pytest.mark.parametrize("alloc", ["paged", "contiguous"])
def test_beam_search_forks_and_frees(engine_factory, alloc):
    opts = {"reservation": "oracle"} if alloc == "contiguous" else {}
    eng, ex = engine_factory(num_blocks=96, allocator=alloc, block_size=4, **opts)
    eng.add_request(list(range(1, 20)), SamplingParams(beam_width=4, max_tokens=16, ignore_eos=True))
    run_checked(eng, ex)
    (out,) = [eng.make_output(r) for r in eng.finished_requests]
    assert len(out.outputs) == 4 and all(len(o.token_ids) == 16 for o in out.outputs)
    scores = [o.cumulative_logprob for o in out.outputs]
    assert scores == sorted(scores, reverse=True)
    assert eng.allocator.num_free_blocks() == eng.allocator.num_blocks
    if alloc == "paged":
        assert max(s.shared_saved_slots for s in eng.step_records) > 0


def test_abort_frees_blocks(engine_factory):
    eng, ex = engine_factory(num_blocks=32)
    eng.add_request(list(range(1, 40)), SamplingParams(max_tokens=50, ignore_eos=True), request_id="a")
    eng.add_request(list(range(1, 10)), SamplingParams(max_tokens=50, n=2, ignore_eos=True), request_id="b")
    for _ in range(3):
        eng.step()
    assert eng.allocator.num_free_blocks() < 32
    eng.abort_request("a")
    eng.abort_request("b")
    eng.abort_request("b")  # idempotent
    assert not eng.has_unfinished_requests()
    assert eng.allocator.num_free_blocks() == 32
    eng.allocator.check_invariants()
    assert {r.finish_reason for r in eng.request_records} == {"abort"}


def test_eos_and_stop_token_ids(engine_factory):
    eng, ex = engine_factory(num_blocks=32, eos=1003)
    # the fake executor's first token for seq s is 1000 + 7 s % 500; with ids 0.., stop quickly
    r = eng.add_request([5, 6, 7], SamplingParams(max_tokens=30, stop_token_ids=list(range(1000, 1500))))
    run_checked(eng, ex)
    assert r.seqs[0].num_output_tokens == 1 and r.seqs[0].status.finish_reason == "stop"


def test_static_batches_run_to_completion(engine_factory):
    eng, ex = engine_factory(num_blocks=64, scheduler="static", allocator="contiguous", reservation="oracle")
    for i in range(6):
        eng.add_request(list(range(1, 9)), SamplingParams(max_tokens=5 + 10 * (i % 2), ignore_eos=True),
                        expected_output_len=5 + 10 * (i % 2))
    eng.add_request(list(range(1, 9)), SamplingParams(max_tokens=5, ignore_eos=True), arrival_time=0.0)
    first = eng.step()
    batch = {r.request_id for r in eng.scheduler.running}
    while eng.scheduler.running:
        eng.step()
        assert {r.request_id for r in eng.scheduler.running} <= batch  # nothing joins a running batch
    assert first is not None and len(batch) >= 2
    run_checked(eng, ex)
    assert len(eng.request_records) == 7


def test_bad_input_is_rejected_without_leaks(engine_factory):
    eng, _ = engine_factory(num_blocks=32)
    with pytest.raises(ValueError, match="empty"):
        eng.add_request([], SamplingParams())
    with pytest.raises(ValueError, match="maximum length"):
        eng.add_request(list(range(300)), SamplingParams())
    with pytest.raises(ValueError, match="max_tokens"):
        eng.add_request([1, 2], SamplingParams(max_tokens=0))
    assert eng.allocator.num_free_blocks() == 32 and not eng.has_unfinished_requests()


@pytest.mark.parametrize("key,value,match", [
    ("allocator", {"name": "pagd"}, "choose one of"),
    ("scheduler", {"name": "fcfs", "preemption": "drop"}, "recompute"),
    ("scheduler", {"name": "fcfs", "bogus": 1}, "scheduler.bogus"),
    ("executor", {"name": "gpu"}, "choose one of"),
])
def test_bad_config_names_key_and_choices(key, value, match):
    from tests.engine.conftest import make_cfg  # noqa: PLC0415

    cfg = make_cfg()
    cfg[key] = value
    with pytest.raises(ValueError, match=match):
        LLMEngine(cfg, executor=None)
