"""TorchExecutor step mechanics: swap out/in and copy-on-write before the forward, parallel
samples at prompt end, budget arithmetic, the registry factory, and a CUDA smoke test."""

from __future__ import annotations

import pytest
import torch

from kvlab.executor import EXECUTORS
from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.torch_runner import TorchExecutor
from kvlab.request import SamplingParams

GREEDY = SamplingParams(temperature=0)


def prefill(ex: TorchExecutor, ids: list[int], table: list[int]) -> int:
    out = ex.execute(StepInput([ScheduledSeq(0, "r", ids, 0, table, 1, GREEDY)]))
    return out.samples[0][0].token_id


def decode(ex: TorchExecutor, token: int, pos: int, table: list[int], **ops) -> tuple[int, float, float]:
    out = ex.execute(StepInput([ScheduledSeq(0, "r", [token], pos, table, 1, GREEDY, sample_index=1)], **ops))
    s = out.samples[0][0]
    return s.token_id, s.logprob, out.swap_time_s


def test_swap_out_and_in_to_other_blocks_preserves_the_sequence(executor, prompt_ids):
    ids = prompt_ids[1]
    assert len(ids) <= 32
    executor.init_cache(12, 4, 16)
    tok = prefill(executor, ids, [5, 2, 7])
    ref = decode(executor, tok, len(ids), [5, 2, 7])
    executor.init_cache(12, 4, 16)
    prefill(executor, ids, [5, 2, 7])
    executor.execute(StepInput([], blocks_to_swap_out=[(5, 0), (2, 3)]))
    executor.kv_cache.data[:, :, [5, 2]] = 0.0  # the blocks get reused by someone else meanwhile
    got = decode(executor, tok, len(ids), [9, 4, 7], blocks_to_swap_in=[(0, 9), (3, 4)])
    assert got[:2] == pytest.approx(ref[:2]) and got[2] > 0


def test_copy_on_write_runs_before_the_forward(executor, prompt_ids):
    ids = prompt_ids[1]
    executor.init_cache(8, 0, 16)
    tok = prefill(executor, ids, [0, 1, 2])
    ref = decode(executor, tok, len(ids), [0, 1, 2])
    executor.init_cache(8, 0, 16)
    prefill(executor, ids, [0, 1, 2])
    got = decode(executor, tok, len(ids), [0, 3, 2], blocks_to_copy=[(1, 3)])
    assert got[:2] == pytest.approx(ref[:2])


def test_parallel_samples_at_prompt_end_are_seeded(executor, prompt_ids):
    sp = SamplingParams(n=4, temperature=1.0, seed=3, logprobs=2)
    step = StepInput([ScheduledSeq(0, "r", prompt_ids[0], 0, [0], 4, sp)])
    executor.init_cache(4, 0, 16)
    a = executor.execute(step).samples[0]
    b = executor.execute(step).samples[0]
    assert len(a) == 4 and [s.token_id for s in a] == [s.token_id for s in b]
    assert all(s.top_logprobs is not None and len(s.top_logprobs) == 2 for s in a)


def test_prefill_chunk_without_sampling_returns_empty_list(executor, prompt_ids):
    executor.init_cache(4, 0, 16)
    out = executor.execute(StepInput([ScheduledSeq(0, "r", prompt_ids[0], 0, [1], 0, GREEDY)]))
    assert out.samples == {0: []} and out.duration_s > 0


def test_budget_arithmetic_and_length_limit(executor):
    assert executor.kv_bytes_per_block(16) == 30 * 2 * 16 * 3 * 64 * 4
    assert executor.kv_capacity_blocks(16) == int(executor.cpu_kv_gib * 2**30) // (30 * 2 * 16 * 3 * 64 * 4)
    executor.init_cache(2, 0, 16)
    too_long = ScheduledSeq(0, "r", [1], executor.max_model_len, [0], 1, GREEDY)
    with pytest.raises(ValueError, match="max_model_len"):
        executor.execute(StepInput([too_long]))


def test_registry_factory_builds_from_a_run_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "model": {"name": "tiny", "arch": "llama", "num_layers": 1, "hidden_size": 32, "num_heads": 2,
                  "num_kv_heads": 1, "head_dim": 16, "ffn_size": 64, "vocab_size": 64,
                  "max_model_len": 128, "checkpoint": "random"},
        "device": "cpu", "dtype": "bfloat16", "seed": 0,
        "kv": {"gpu_memory_utilization": 0.9, "max_model_len": 64},
        "executor": {"name": "torch", "kv_cache_gib": 0.001, "num_threads": 1},
    })
    ex = EXECUTORS.build("torch", cfg)
    assert ex.dtype == torch.bfloat16 and ex.max_model_len == 64
    assert ex.kv_capacity_blocks(16) == int(0.001 * 2**30) // ex.kv_bytes_per_block(16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_greedy_matches_cpu(smol_cfg, executor, prompt_ids):
    gpu = TorchExecutor(smol_cfg, device="cuda", dtype="float32")
    gpu.init_cache(8, 4, 16)
    executor.init_cache(8, 4, 16)
    tok = prefill(gpu, prompt_ids[1], [3, 1, 4])
    assert tok == prefill(executor, prompt_ids[1], [3, 1, 4])
    assert decode(gpu, tok, len(prompt_ids[1]), [3, 1, 4])[0] == decode(executor, tok, len(prompt_ids[1]),
                                                                         [3, 1, 4])[0]
