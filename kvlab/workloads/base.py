"""Workload data types: :class:`TraceRequest`, :class:`Workload`, and the context generators get.

A workload is a list of requests with arrival times and *forced* output lengths (the trace's
output length; the engine ignores EOS and stops exactly there, as in the paper's experiments).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Synthetic prompts use ids from here up, so they never hit special tokens (BOS/EOS/pad/chat
# markers sit at the low ids in OPT, Llama and SmolLM2 vocabularies).
TEXT_TOKEN_ID_LOW = 100


class WorkloadError(ValueError):
    """A workload config or trace file is invalid; the message names the offending key."""


@dataclass
class TraceRequest:
    """One request of a trace. Times in seconds from the start of the trace.

    ``prompt_token_ids`` is ``None`` only when the prompt is text and no tokenizer was given (then
    ``prompt`` holds the text and ``prompt_len`` its tokenized length from the file).
    ``output_len`` is the forced number of output tokens per sequence. ``n`` parallel samples or
    ``beam_width`` beams (not both > 1). ``messages`` is the chat form (OpenAI style), if any.
    """

    request_id: str
    arrival_time: float
    prompt_token_ids: list[int] | None
    prompt: str | None
    prompt_len: int
    output_len: int
    n: int = 1
    beam_width: int = 1
    messages: list[dict[str, str]] | None = None


@dataclass
class Workload:
    """A named, ordered (by arrival time) list of requests plus a one-line description."""

    name: str
    description: str
    requests: list[TraceRequest]
    config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)

    def stats(self) -> dict[str, float]:
        """Counts and mean lengths (handy for logs and the docs' sanity checks)."""
        p = np.array([r.prompt_len for r in self.requests], dtype=float)
        o = np.array([r.output_len for r in self.requests], dtype=float)
        last = max((r.arrival_time for r in self.requests), default=0.0)
        return {
            "num_requests": float(len(self.requests)),
            "mean_prompt_len": float(p.mean()) if len(p) else float("nan"),
            "mean_output_len": float(o.mean()) if len(o) else float("nan"),
            "last_arrival_s": float(last),
        }


@dataclass
class RequestBody:
    """What a generator produces for one request (arrival time and sampling are added later)."""

    prompt_len: int
    output_len: int
    prompt_token_ids: list[int] | None = None
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None


@dataclass
class WorkloadContext:
    """Everything a generator may use. ``rng(stream)`` gives an independent, seeded generator per
    named stream, so e.g. changing the rate (arrival stream) leaves the lengths unchanged."""

    seed: int
    seed_offset: int
    vocab_size: int
    max_model_len: int
    max_prompt_len: int
    max_total_len: int  # inclusive: keep prompt_len + output_len <= max_total_len
    tokenizer: Any = None

    def rng(self, stream: str) -> np.random.Generator:
        ss = np.random.SeedSequence([self.seed, self.seed_offset, zlib.crc32(stream.encode())])
        return np.random.default_rng(ss)

    def random_token_ids(self, rng: np.random.Generator, length: int) -> list[int]:
        """Synthetic text-like ids in ``[TEXT_TOKEN_ID_LOW, vocab_size)``."""
        return rng.integers(TEXT_TOKEN_ID_LOW, self.vocab_size, size=length).tolist()

    def fits(self, prompt_len: int, output_len: int) -> bool:
        return (1 <= prompt_len <= self.max_prompt_len and output_len >= 1
                and prompt_len + output_len <= self.max_total_len)
