"""Cost-model sanity: monotonic in work, memory-bound decode, small-block costs (Figs 18b, 19a)."""

from __future__ import annotations

import pytest

from kvlab.executor.cost_model import CostModel
from tests.sim.conftest import hardware, shape


def decode(cost: CostModel, batch: int, ctx: int) -> float:
    """A decode step: ``batch`` sequences, each with ``ctx - 1`` cached tokens and one new."""
    blocks = -(-ctx // cost.block_size)
    return cost.step_time(batch, batch * ctx, batch * (ctx - 1), batch * blocks, batch)


@pytest.fixture
def opt13b() -> CostModel:
    return CostModel(shape("opt-13b"), hardware("a100-40gb"), block_size=16)


def test_decode_is_memory_bound_and_plausible(opt13b: CostModel) -> None:
    t = decode(opt13b, batch=1, ctx=512)
    weights_over_bw = opt13b.weight_bytes / opt13b.bandwidth
    print(f"OPT-13B A100-40GB decode bs=1 ctx=512: {t * 1e3:.2f} ms "
          f"(weights/bw {weights_over_bw * 1e3:.2f} ms)")
    assert 0.015 < t < 0.040
    assert t == pytest.approx(weights_over_bw, rel=0.1)


def test_more_work_takes_longer(opt13b: CostModel) -> None:
    batches = [decode(opt13b, b, 512) for b in (1, 8, 32, 128)]
    assert batches == sorted(batches) and batches[0] < batches[-1]
    contexts = [decode(opt13b, 32, c) for c in (64, 256, 1024, 2048)]
    assert contexts == sorted(contexts) and contexts[0] < contexts[-1]
    prefills = [opt13b.prefill_time(n) for n in (16, 128, 512, 2048)]
    assert prefills == sorted(prefills) and prefills[0] < prefills[-1]
    assert opt13b.step_time(0, 0, 0, 0, 0) == 0.0


def test_large_prefill_is_compute_bound(opt13b: CostModel) -> None:
    t = opt13b.prefill_time(2048)
    flops = opt13b.lin_flops_per_token * 2048
    assert t > flops / opt13b.flops


def test_small_blocks_slow_attention(opt13b: CostModel) -> None:
    s, hw = shape("opt-13b"), hardware("a100-40gb")
    times = [decode(CostModel(s, hw, b), 32, 1024) for b in (1, 4, 16, 64, 256)]
    assert times == sorted(times, reverse=True) and times[0] > 1.2 * times[2]


def test_swap_cost_per_token_decreases_with_block_size() -> None:
    s, hw = shape("opt-13b"), hardware("a100-40gb")
    per_token = [CostModel(s, hw, b).swap_time(1) / b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    assert all(a > b for a, b in zip(per_token, per_token[1:]))
    assert CostModel(s, hw, 16).swap_time(0) == 0.0


def test_tensor_parallel_adds_allreduce() -> None:
    cost = CostModel(shape("opt-66b"), hardware("a100-40gb"), 16)
    assert cost.allreduce_fixed_s > 0
    t = decode(cost, 8, 512)
    print(f"OPT-66B 4xA100-40GB decode bs=8 ctx=512: {t * 1e3:.2f} ms")
    assert 0.015 < t < 0.060
