"""The CUDA path end to end (``gpu``-marked: skipped without CUDA).

SmolLM2 on CUDA with the Triton backend gives transformers' greedy tokens through the whole
engine (chunked prefill, batching, swap preemption through pinned memory, prefix hits); the
sampler runs on device logits and a seeded request draws the same tokens on CPU and CUDA; steps
carry NVML readings; the KV budget comes from ``torch.cuda.mem_get_info``.
"""

from __future__ import annotations

import pytest
import torch

from kvlab.engine import LLMEngine
from kvlab.executor.base import ScheduledSeq
from kvlab.executor.device_monitor import device_metrics
from kvlab.executor.sampler import Sampler
from kvlab.executor.torch_runner import TorchExecutor
from kvlab.request import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NEW = 32
PROMPTS = ["The capital of France is", "def quicksort(items):\n", "Memory fragmentation happens when",
           "A haiku about the sea:", "List three prime numbers:", "In 1969, astronauts"]
CASES = [("paged", 16, None, "recompute", {}), ("prefix", 16, None, "recompute", {}),
         ("contiguous", 16, None, "recompute", {"reservation": "oracle", "placement": "first_fit"}),
         ("paged", 16, 12, "swap", {})]


@pytest.fixture(scope="module")
def gpu_executor(smol_cfg) -> TorchExecutor:
    ex = TorchExecutor(smol_cfg, device="cuda", dtype="float32", attention_backend="auto")
    assert ex.attention_backend == "triton"
    return ex


@pytest.fixture(scope="module")
def reference(hf_model, gpu_executor) -> list[list[int]]:
    model = hf_model.to("cuda")
    out = []
    for p in PROMPTS:
        ids = gpu_executor.tokenizer.encode(p)
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids], device="cuda"), max_new_tokens=NEW, min_new_tokens=NEW,
                                 do_sample=False, attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                            device="cuda"),
                                 pad_token_id=gpu_executor.eos_token_id)
        out.append(gen[0, len(ids):].tolist())
    hf_model.to("cpu")
    return out


@pytest.mark.parametrize("allocator,block_size,num_blocks,preemption,opts", CASES,
                         ids=[f"{c[0]}-{c[3]}{'-tiny' if c[2] else ''}" for c in CASES])
def test_smollm2_triton_greedy_equals_transformers(gpu_executor, reference, allocator, block_size, num_blocks,
                                                   preemption, opts):
    cfg = {"allocator": {"name": allocator, "block_size": block_size, "num_blocks": num_blocks, **opts},
           "scheduler": {"name": "fcfs", "max_num_batched_tokens": 32, "chunked_prefill": True,
                         "preemption": preemption, "watermark": 0.0},
           "executor": {"name": "torch"}, "model": {"max_model_len": 256, "vocab_size": 49152},
           "kv": {"max_model_len": 256, "swap_space_gib": 64 * gpu_executor.kv_bytes_per_block(16) / 2**30}}
    eng = LLMEngine(cfg, executor=gpu_executor)
    params = SamplingParams(temperature=0.0, max_tokens=NEW, min_tokens=NEW)
    reqs = [eng.add_request(gpu_executor.tokenizer.encode(p), params) for p in PROMPTS]
    while eng.has_unfinished_requests():
        eng.step()
    assert [r.seqs[0].output_token_ids for r in reqs] == reference
    if preemption == "swap":
        assert sum(s.swapped_out_blocks for s in eng.step_records) > 0
    assert all(s.gpu_memory_used_bytes and s.gpu_memory_used_bytes > 0 for s in eng.step_records)
    dm = device_metrics(gpu_executor.monitor.name, eng.step_records)
    assert dm["device"] == torch.cuda.get_device_name() and dm["gpu_memory_used_peak_gib"] != "n/a"


def test_budget_comes_from_free_device_memory(gpu_executor):
    free, _ = torch.cuda.mem_get_info()
    blocks = gpu_executor.kv_capacity_blocks(16)
    assert 0 < blocks * gpu_executor.kv_bytes_per_block(16) <= free


def seq(sp: SamplingParams, sid: int, n: int = 1, beam: bool = False) -> ScheduledSeq:
    return ScheduledSeq(sid, f"r{sid}", [1], 0, [0], n, sp, sample_index=2, beam=beam)


def test_sampler_on_device_logits_matches_the_cpu():
    logits = torch.randn(5, 4000, generator=torch.Generator().manual_seed(0)) * 3
    seqs = [seq(SamplingParams(temperature=0.8, seed=1, logprobs=3), 0),
            seq(SamplingParams(temperature=1.0, top_k=20, seed=2), 1, n=3),
            seq(SamplingParams(temperature=0.9, top_p=0.7, seed=3), 2),
            seq(SamplingParams(temperature=0.0), 3),
            seq(SamplingParams(beam_width=2, temperature=0.0), 4, n=4, beam=True)]
    cpu = Sampler(None, 0).sample(logits, seqs)
    gpu = Sampler(None, 0).sample(logits.cuda(), seqs)
    assert [[s.token_id for s in r] for r in gpu] == [[s.token_id for s in r] for r in cpu]
    for rc, rg in zip(cpu, gpu):
        for a, b in zip(rc, rg):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    assert set(gpu[0][0].top_logprobs) == set(cpu[0][0].top_logprobs)
