"""Accuracy of a KV format on the real model, measured through the engine.

Perplexity, KL and top-1 agreement come from **chunked prefill through the engine**: the text is
one request with ``max_tokens=1``; the scheduler's token budget is set to the chunk size, so the
prompt is prefilled ``chunk`` tokens per step, and each step's tokens attend to the earlier
chunks through the KV cache — written (quantized) by the earlier steps and read back
(dequantized) by this one, exactly as in serving. The engine samples only a prompt's last row;
:class:`LogitsTap` asks the model for the logits of every row of each step instead (and hands the
sampler its row), so the executor, the backend and the cache run unchanged.

Greedy agreement and passkey retrieval are plain greedy generations through the same engine:
decode steps read the whole context from the quantized cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kvlab.engine import LLMEngine
from kvlab.quant.text import PasskeyCase
from kvlab.request import SamplingParams


class LogitsTap:
    """While active, every forward of ``model`` computes fp32 logits for ALL its tokens and passes
    them to ``on_logits`` (flat order of the step); the caller still gets the rows it asked for.

    Mutates ``model`` (an instance attribute shadows ``forward``) until the ``with`` block ends."""

    def __init__(self, model: Any, on_logits: Callable[[torch.Tensor], None]) -> None:
        self.model, self.on_logits = model, on_logits

    def __enter__(self) -> LogitsTap:
        original = self.model.forward

        def forward(input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: Any, meta: Any,
                    logit_rows: torch.Tensor | None = None) -> torch.Tensor:
            logits = original(input_ids, positions, kv_cache, meta, None)
            self.on_logits(logits)
            return logits if logit_rows is None else logits.index_select(0, logit_rows)

        self.model.forward = forward
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.forward


@dataclass
class TextScore:
    """Sums over every scored position (a position predicts the next token of its context)."""

    tokens: int = 0
    nll: float = 0.0
    kl: float = 0.0
    top1_agree: int = 0

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


def run_to_completion(engine: LLMEngine, prompts: Sequence[list[int]],
                      params: SamplingParams | Sequence[SamplingParams]) -> list[list[int]]:
    """Add every prompt (one ``params`` for all, or one per prompt), step until all finish; the
    generated token ids per prompt, in order."""
    per = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    ids = [engine.add_request(list(p), sp).request_id for p, sp in zip(prompts, per, strict=True)]
    done: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.outputs[0].token_ids)
    missing = [i for i in ids if i not in done]
    if missing:
        raise RuntimeError(f"requests {missing} ended without an output")
    return [done[i] for i in ids]


def score_context(engine: LLMEngine, ids: list[int], chunk: int, score: TextScore,
                  ref_path: Path, is_reference: bool) -> None:
    """Prefill ``ids`` in chunks of ``chunk`` tokens and add its NLL/KL/top-1 to ``score``.

    The reference run (the unquantized cache) saves its log-probabilities to ``ref_path``; every
    other run compares against that file. Mutates ``score`` and the engine (one request runs)."""
    L = len(ids)
    targets = torch.tensor(ids[1:] + [-1], dtype=torch.long)
    ref = None if is_reference else torch.load(ref_path, mmap=True)
    saved: list[torch.Tensor] = []
    offset = 0

    def on_logits(logits: torch.Tensor) -> None:
        nonlocal offset
        n = logits.shape[0]
        logp = torch.log_softmax(logits.float().cpu(), dim=-1)
        tgt = targets[offset:offset + n]
        valid = tgt >= 0
        score.tokens += int(valid.sum())
        score.nll -= float(logp[valid].gather(1, tgt[valid, None]).sum())
        if is_reference:
            saved.append(logp)
            score.top1_agree += int(valid.sum())
        else:
            r = ref[offset:offset + n][valid].float()
            q = logp[valid]
            score.kl += float((r.exp() * (r - q)).sum())
            score.top1_agree += int((r.argmax(-1) == q.argmax(-1)).sum())
        offset += n

    old_budget = engine.scheduler.max_num_batched_tokens
    engine.scheduler.max_num_batched_tokens = chunk
    try:
        with LogitsTap(engine.executor.model, on_logits):
            run_to_completion(engine, [ids], SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
    finally:
        engine.scheduler.max_num_batched_tokens = old_budget
    if offset != L:
        raise RuntimeError(f"the tap saw {offset} rows for a {L}-token context (another request ran?)")
    if is_reference:
        torch.save(torch.cat(saved), ref_path)


def greedy_match(reference: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]]) -> list[int]:
    """Per prompt, how many generated tokens agree before the first divergence."""
    out = []
    for a, b in zip(reference, tokens, strict=True):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        out.append(n)
    return out


PASSKEY_ANSWER_TOKENS = 8


def generations(engine: LLMEngine, greedy_prompts: Sequence[list[int]], greedy_tokens: int,
                cases: Sequence[PasskeyCase]) -> tuple[list[list[int]], list[bool]]:
    """Greedy continuations of ``greedy_prompts`` and the passkey answers, in ONE batch (fewer
    steps than two): the generated ids per prompt, and per case whether the answer holds its key."""
    greedy = SamplingParams(max_tokens=greedy_tokens, temperature=0.0, ignore_eos=True)
    answer = SamplingParams(max_tokens=PASSKEY_ANSWER_TOKENS, temperature=0.0, ignore_eos=True)
    outs = run_to_completion(engine, [*greedy_prompts, *(c.token_ids for c in cases)],
                             [greedy] * len(greedy_prompts) + [answer] * len(cases))
    tok = engine.tokenizer
    answers = outs[len(greedy_prompts):]
    return outs[:len(greedy_prompts)], [c.key in tok.decode(o, skip_special_tokens=True)
                                         for c, o in zip(cases, answers, strict=True)]
