"""What the engine returns to its callers (offline ``LLM``, the server): vLLM-shaped outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvlab.records import RequestRecord


@dataclass
class CompletionOutput:
    """One generated sequence. ``logprobs`` (when asked) holds, per output token, a dict
    {token id: logprob} with the chosen token first, then the top alternatives."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, float]] | None
    finish_reason: str | None  # "stop" | "length" | "abort" | "error" | None while running
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    metrics: RequestRecord | None = None
    extra: dict = field(default_factory=dict)
    finish_detail: str | None = None  # why the engine ended it early: never fit, outgrew the pool, error
