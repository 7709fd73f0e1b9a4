"""The engine releases finished requests, bounds its records in the server mode, and publishes one
immutable ``EngineStats`` per step that agrees with the allocator and scheduler it summarises."""

from __future__ import annotations

import pytest

from kvlab.engine import LLMEngine
from kvlab.engine_stats import EngineStats
from kvlab.metrics import latency_samples, request_latency
from kvlab.request import SamplingParams
from tests.engine.conftest import make_cfg
from tests.engine.fake_executor import FakeExecutor


def drain(eng: LLMEngine, max_steps: int = 3000) -> list[EngineStats]:
    seen = []
    for _ in range(max_steps):
        if not eng.has_unfinished_requests():
            return seen
        eng.step()
        seen.append(eng.stats)
    raise AssertionError("engine did not finish")


def test_one_immutable_snapshot_per_step(engine_factory) -> None:
    eng, _ = engine_factory(num_blocks=32)
    for i in range(3):
        eng.add_request(list(range(1, 12 + i)), SamplingParams(max_tokens=6, ignore_eos=True))
    seen = drain(eng)
    assert [s.step for s in seen] == list(range(1, len(seen) + 1))
    assert len({id(s) for s in seen}) == len(seen)  # a new object each step, never mutated in place
    with pytest.raises(AttributeError):
        seen[0].step = 99  # type: ignore[misc]
    assert seen[0].as_dict()["kv"]["total_blocks"] == 32
    first = seen[0]
    assert first.running == 3 and first.unfinished == 3 and first.batch_tokens > 0
    kv = first.kv
    assert kv.token_states + kv.reservation + kv.internal_frag + kv.external_frag == kv.total_slots
    assert kv.total_blocks == 32 and kv.free_blocks < 32 and kv.block_size == 4
    assert first.last_step_at is not None and first.published_at >= first.last_step_at
    last = eng.stats
    assert last.unfinished == 0 and last.running == 0 and last.kv.free_blocks == 32
    assert last.num_finished == 3 and last.num_aborted == 0
    # the latency summary uses the one latency implementation (kvlab.metrics.request_latency)
    e2el = latency_samples(list(eng.request_records))["e2el"]
    assert last.e2el.count == 3 and last.e2el.mean_s * 1e3 == pytest.approx(sum(e2el) / 3)
    assert last.tpot.count == 3 and last.tpot.mean_s == pytest.approx(
        sum(request_latency(r).tpot_s for r in eng.request_records) / 3)


def test_finished_requests_are_released(engine_factory) -> None:
    eng, _ = engine_factory(num_blocks=32)
    eng.add_request([1, 2, 3], SamplingParams(max_tokens=4, ignore_eos=True), request_id="a")
    eng.add_request([1, 2, 3], SamplingParams(max_tokens=40, ignore_eos=True), request_id="b")
    eng.step()
    assert set(eng.requests) == {"a", "b"}
    eng.abort_request("b")
    assert set(eng.requests) == {"a"}
    assert eng.stats.unfinished == 2  # published per step; between steps only when asked
    assert eng.publish_stats().unfinished == 1 and eng.stats.step == 1
    drain(eng)
    assert eng.requests == {}
    assert eng.stats.num_finished == 2 and eng.stats.num_aborted == 1
    # the id may be reused once its request is gone
    eng.add_request([4, 5], SamplingParams(max_tokens=2, ignore_eos=True), request_id="a")


def test_bounded_records_mode_keeps_only_the_last() -> None:
    eng = LLMEngine(make_cfg(), executor=FakeExecutor(num_blocks=32, max_model_len=256), max_records=5)
    for _ in range(4):
        for _ in range(3):
            eng.add_request([1, 2, 3, 4], SamplingParams(max_tokens=3, ignore_eos=True))
        drain(eng)
    assert len(eng.request_records) == 5 and len(eng.step_records) == 5
    assert len(eng.finished_requests) == 0
    assert eng.stats.num_finished == 12 and eng.stats.e2el.count == 12  # aggregates count everything
    assert eng.stats.step == eng.num_steps > 5


def test_all_records_mode_is_the_default(engine_factory) -> None:
    eng, _ = engine_factory(num_blocks=32)
    for _ in range(7):
        eng.add_request([1, 2, 3, 4], SamplingParams(max_tokens=3, ignore_eos=True))
    drain(eng)
    assert len(eng.request_records) == 7 and len(eng.finished_requests) == 7
    assert len(eng.step_records) == eng.num_steps


def test_max_records_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_records"):
        LLMEngine(make_cfg(), executor=FakeExecutor(num_blocks=8, max_model_len=64), max_records=0)
