"""Engine tests run the real allocators and schedulers over a tensor-free fake executor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_executor import FakeExecutor  # noqa: E402

from kvlab.engine import LLMEngine  # noqa: E402


def make_cfg(allocator: str = "paged", block_size: int = 4, scheduler: str = "fcfs", budget: int = 64,
             preemption: str = "recompute", swap_blocks: int = 0, chunked: bool = True, **alloc_opts) -> dict:
    sched = {"name": scheduler, "preemption": preemption}
    if scheduler != "static":
        sched.update(max_num_batched_tokens=budget, chunked_prefill=chunked)
    return {
        "allocator": {"name": allocator, "block_size": block_size, "num_blocks": None, **alloc_opts},
        "scheduler": sched,
        "executor": {"name": "sim"},
        "model": {"max_model_len": 256, "vocab_size": 1000},
        "kv": {"swap_space_gib": swap_blocks * 1024 / 2**30},
    }


@pytest.fixture
def engine_factory():
    def build(num_blocks: int = 32, eos: int | None = None, **kw) -> tuple[LLMEngine, FakeExecutor]:
        ex = FakeExecutor(num_blocks=num_blocks, max_model_len=256, eos_token_id=eos)
        return LLMEngine(make_cfg(**kw), executor=ex), ex

    return build
