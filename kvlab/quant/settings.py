"""Sizes of the comparison: ``quick`` (CI: six schemes in under three minutes on a 2-core CPU) and
``full`` (the committed results; sized for a shared 2-core CPU: one 2048-token perplexity context,
passkeys at 1k and 2k; ``--passkey-lengths 1024,2048,4096,8000`` and ``--ppl-contexts N`` go further)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Settings:
    """What one comparison run measures (all sizes in tokens unless named otherwise)."""

    ppl_context_tokens: int = 2048     # tokens per perplexity context (>= 2k in full mode)
    ppl_num_contexts: int = 1          # consecutive windows of the evaluation text
    ppl_chunk: int = 128               # prefill chunk: each chunk reads the earlier ones from the cache
    greedy_prompts: int = 4            # chat instructions for greedy agreement
    greedy_tokens: int = 32            # greedy tokens per prompt
    passkey_lengths: list[int] = field(default_factory=lambda: [1024, 2048])
    passkey_depths: list[float] = field(default_factory=lambda: [0.5])
    prefill_budget: int = 1024         # scheduler token budget of the greedy/passkey generations
    cpu_budget_tokens: int = 512       # CPU serving: the KV budget = this many UNQUANTIZED tokens
    cpu_requests: int = 16
    cpu_prompt_len: list[int] = field(default_factory=lambda: [32, 128])
    cpu_output_len: list[int] = field(default_factory=lambda: [16, 48])
    sim_model: str = "opt-13b"
    sim_hardware: str = "a100-40gb"
    sim_requests: int = 1000
    threads: int = 1                   # torch threads (one is steadiest on a shared 2-core machine)
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quick() -> Settings:
    return Settings(ppl_context_tokens=128, ppl_num_contexts=1, ppl_chunk=32, greedy_prompts=2, greedy_tokens=4,
                    passkey_lengths=[160], passkey_depths=[0.5], prefill_budget=512,
                    cpu_budget_tokens=48, cpu_requests=3, cpu_prompt_len=[8, 24], cpu_output_len=[2, 4],
                    sim_requests=60)


def full() -> Settings:
    return Settings()
