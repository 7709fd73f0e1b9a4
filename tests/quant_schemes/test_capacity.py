"""Capacity = budget // bytes_per_block in both executors, from the one torch-free formula."""

from __future__ import annotations

import pytest
import torch

from kvlab.engine import LLMEngine
from kvlab.executor.sim import build_sim_executor
from kvlab.kv_quant_format import KVQuantConfig
from kvlab.models.config import resolve_model
from tests.quant_schemes.helpers import SCHEMES, cache_for
from tests.quant_schemes.test_engine_schemes import TINY, tiny_cfg


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_match_the_formula(scheme: str, dtype: torch.dtype) -> None:
    q = KVQuantConfig.parse(scheme)
    cache = cache_for(q, num_blocks=40, block_size=16, kvh=3, hd=64, dtype=dtype, num_layers=2)
    per = q.bytes_per_block(2, 3, 64, dtype.itemsize, 16)
    assert cache.spec.bytes_per_block == per
    held = cache.nbytes - q.fixed_bytes(2, 3)
    assert per * 40 * 0.99 <= held <= per * 40  # the kivi2 residual pool never exceeds its share


def test_quantized_formats_are_smaller_in_the_stated_order() -> None:
    bpt = {s: KVQuantConfig.parse(s).bytes_per_token(30, 3, 64, 2) for s in SCHEMES}
    assert bpt["none"] == 2 * 30 * 3 * 64 * 2
    assert bpt["fp8_e4m3"] == bpt["none"] / 2
    assert bpt["int4"] < bpt["int8"] < bpt["none"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_torch_executor_capacity_is_budget_over_bytes_per_token(scheme: str) -> None:
    cfg = tiny_cfg(scheme, num_blocks=None, kv_cache_gib=0.01)
    eng = LLMEngine(cfg)
    budget = 0.01 * 2**30
    bpt = eng.block_bytes / eng.block_size
    assert eng.kv_capacity_tokens * bpt <= budget
    assert eng.kv_capacity_tokens >= 0.99 * budget / bpt
    q = KVQuantConfig.from_config(cfg)
    m = resolve_model("smollm2-135m") | TINY
    assert eng.block_bytes == q.bytes_per_block(m["num_layers"], m["num_kv_heads"], m["head_dim"], 4, 4)



@pytest.mark.parametrize("scheme", SCHEMES)
def test_sim_capacity_at_paper_scale(scheme: str) -> None:
    from kvlab.paperlib.jobs import compose

    cfg = compose(["executor=sim", "model=opt-13b", "hardware=a100-40gb", f"kv_quant={scheme}"])
    ex = build_sim_executor(cfg)
    bpb = ex.kv_bytes_per_block(16)
    blocks = ex.kv_capacity_blocks(16)
    budget = ex._budget_bytes
    assert blocks * bpb <= budget and (blocks + 1) * bpb > budget - KVQuantConfig.parse(scheme).fixed_bytes(40, 40)
    if scheme == "int8":
        none = build_sim_executor(compose(["executor=sim", "model=opt-13b", "hardware=a100-40gb"]))
        assert blocks >= 1.8 * none.kv_capacity_blocks(16)  # the target: >= 1.8x the tokens


def test_sim_attention_cost_follows_bytes_read() -> None:
    from kvlab.paperlib.jobs import compose

    costs = {}
    for scheme in ("none", "int8", "int4"):
        ex = build_sim_executor(compose(["executor=sim", "model=opt-13b", "hardware=a100-40gb", f"kv_quant={scheme}"]))
        cost = ex.cost_model(16)
        costs[scheme] = cost.step_time(64, 64 * 2000, 64 * 2000, 64 * 125, 64, 64)  # 64 decodes at 2k context
    assert costs["int4"] < costs["int8"] < costs["none"]
