"""KV capacity arithmetic vs the vLLM paper's Table 1 (paper setup: utilization 0.95, 2560
batched tokens, 1 GiB workspace, CUDA-reported device memory, CUDA context)."""

from __future__ import annotations

import dataclasses

import pytest

from kvlab.executor.cost_model import PAPER_MAX_NUM_BATCHED_TOKENS, kv_capacity_tokens
from tests.sim.conftest import hardware, shape

PAPER_UTILIZATION = 0.95  # paper-era cacheflow memory_analyzer default

TABLE1 = [  # (model, hardware, paper's "Max. # KV cache slots")
    ("opt-13b", "a100-40gb", 15_700),
    ("opt-66b", "a100-40gb", 9_700),
    ("opt-175b", "a100-80gb", 60_100),
]


@pytest.mark.parametrize(("model", "hw", "paper_slots"), TABLE1)
def test_table1_slots_within_3_percent(model: str, hw: str, paper_slots: int) -> None:
    slots = kv_capacity_tokens(shape(model), hardware(hw), PAPER_UTILIZATION, PAPER_MAX_NUM_BATCHED_TOKENS)
    print(f"{model} on {hw}: {slots} slots (paper {paper_slots}, {slots / paper_slots - 1:+.1%})")
    assert abs(slots / paper_slots - 1) < 0.03


def test_kv_bytes_per_token_matches_paper() -> None:
    assert shape("opt-13b").kv_bytes_per_token == 819_200  # "800 KB" per token (paper §3)
    assert shape("opt-66b").kv_bytes_per_token_per_gpu == 576 * 1024
    assert shape("opt-175b").kv_bytes_per_token_per_gpu == 576 * 1024
    assert shape("llama-3-8b").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # GQA: 8 KV heads


def test_paper_parameter_sizes() -> None:
    assert shape("opt-13b").param_bytes_per_gpu / 1e9 == pytest.approx(26, rel=0.02)  # "26 GB"
    total_66b = shape("opt-66b").param_count() * 2 / 1e9
    assert total_66b == pytest.approx(132, rel=0.02)  # "132 GB"


def test_lower_utilization_gives_fewer_slots_and_model_too_big_gives_zero() -> None:
    s, hw = shape("opt-13b"), hardware("a100-40gb")
    assert kv_capacity_tokens(s, hw, 0.9, 2560) < kv_capacity_tokens(s, hw, 0.95, 2560)
    assert kv_capacity_tokens(shape("opt-175b"), hw, 0.95, 2560) == 0  # 40.7 GiB shards > 40 GB
    big = dataclasses.replace(shape("opt-66b"), tensor_parallel=1)
    assert kv_capacity_tokens(big, hw, 0.9, 2560) == 0


@pytest.mark.parametrize("util", [0.0, 1.5, -0.1])
def test_bad_utilization(util: float) -> None:
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        kv_capacity_tokens(shape("opt-13b"), hardware("a100-40gb"), util, 2560)
