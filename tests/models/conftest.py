"""Shared fixtures for the model tests: SmolLM2 loaded once per session, by kvlab and by HF.

Both load the SAME dequantized weights: the GGUF is converted once into kvlab's cache dir (a
plain HF checkpoint directory) and transformers loads that directory, so logits comparisons
compare like with like (fp32, CPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kvlab.executor.torch_runner import TorchExecutor
from kvlab.models.config import resolve_model
from kvlab.models.loader import checkpoint_dir
from tests.models.helpers import PROMPTS


@pytest.fixture(scope="session")
def smol_cfg() -> dict:
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def smol_dir(smol_cfg: dict) -> Path:
    path = checkpoint_dir(smol_cfg)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def executor(smol_cfg: dict, smol_dir: Path) -> TorchExecutor:
    # One thread: CI and sibling jobs share 2 cores, and OpenMP with 2 threads on a busy machine
    # stalls ~10 ms per parallel region (measured); one thread is steady.
    return TorchExecutor(smol_cfg, device="cpu", dtype="float32", seed=0, num_threads=1)


@pytest.fixture(scope="session")
def hf_model(smol_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32, local_files_only=True).eval()


@pytest.fixture(scope="session")
def prompt_ids(executor: TorchExecutor) -> list[list[int]]:
    tok = executor.tokenizer
    chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in PROMPTS[:2]]
    return [tok(p).input_ids for p in [PROMPTS[0], PROMPTS[2], *chats]]
