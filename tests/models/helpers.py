"""Helpers for the model tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import random

import torch

PROMPTS = [
    "The capital of France is",
    "Write a haiku about paged attention and memory fragmentation.",
    "def fibonacci(n):\n    ",
]


def shuffled_table(num_blocks: int, seed: int = 0) -> list[int]:
    """A non-contiguous, shuffled block table over ``num_blocks`` block ids."""
    ids = list(range(num_blocks))
    random.Random(seed).shuffle(ids)
    return ids


@torch.inference_mode()
def hf_logits(hf_model, ids: list[int]) -> torch.Tensor:
    return hf_model(torch.tensor([ids])).logits[0].float()
