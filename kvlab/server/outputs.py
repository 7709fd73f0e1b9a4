"""Engine outputs -> OpenAI response pieces: text deltas, logprobs, usage, SSE framing.

The engine reports each sequence's *cumulative* text. Streaming sends deltas and holds back a
tail that might still change: ``len(longest stop string) - 1`` characters (a stop string may be
half generated; the engine cuts the text at the stop string when it finishes) and trailing
U+FFFD (a multi-byte character split across tokens). Everything is flushed when the sequence
finishes, so the streamed text always equals the non-streamed text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kvlab.request_output import CompletionOutput, RequestOutput


@dataclass
class ChoiceCursor:
    """What has been sent of one choice so far (streaming)."""

    chars: int = 0
    tokens: int = 0
    started: bool = False
    done: bool = False
    text_offset: int = 0  # legacy completions logprobs: offset of the next token's text


@dataclass
class Delta:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None


def next_delta(cur: ChoiceCursor, out: CompletionOutput, holdback: int) -> Delta | None:
    """The unsent part of ``out`` (None if nothing new); advances ``cur``."""
    if cur.done:
        return None
    text, finished = out.text, out.finish_reason is not None
    safe = len(text)
    if not finished:
        safe = max(safe - holdback, 0)
        while safe > 0 and text[safe - 1] == "\ufffd":
            safe -= 1
    new_text = text[cur.chars : safe] if safe > cur.chars else ""
    new_ids = out.token_ids[cur.tokens :]
    lps = (out.logprobs or [])[cur.tokens : cur.tokens + len(new_ids)] if out.logprobs is not None else []
    if not new_text and not finished and not lps:
        return None
    cur.chars = max(cur.chars, safe)
    cur.tokens = len(out.token_ids)
    cur.done = finished
    return Delta(new_text, new_ids, lps, out.finish_reason if finished else None)


def usage(out: RequestOutput) -> dict[str, Any]:
    prompt = len(out.prompt_token_ids)
    completion = sum(len(o.token_ids) for o in out.outputs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(out.num_cached_tokens)},
    }


class LogprobFormatter:
    """Formats {token id: logprob} dicts (chosen token first) in both OpenAI styles."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def token(self, tid: int) -> str:
        if self.tokenizer is None:
            return f"token_id:{tid}"
        return self.tokenizer.decode([tid])

    def completion(
        self, ids: list[int], lps: list[dict[int, float]], offset: int
    ) -> tuple[dict[str, Any], int]:
        """Legacy ``/v1/completions`` logprobs for ``ids``; returns it and the next text offset."""
        tokens, token_lps, tops, offsets = [], [], [], []
        for tid, d in zip(ids, lps):
            tok = self.token(tid)
            tokens.append(tok)
            token_lps.append(d.get(tid))
            tops.append({self.token(t): lp for t, lp in d.items()})
            offsets.append(offset)
            offset += len(tok)
        return {
            "tokens": tokens,
            "token_logprobs": token_lps,
            "top_logprobs": tops,
            "text_offset": offsets,
        }, offset

    def chat(self, ids: list[int], lps: list[dict[int, float]], top_k: int) -> dict[str, Any]:
        """Chat ``logprobs.content``: each token with its ``top_k`` most likely alternatives."""
        content = []
        for tid, d in zip(ids, lps):
            tok = self.token(tid)
            best = sorted(d.items(), key=lambda kv: -kv[1])[:top_k]
            content.append(
                {
                    "token": tok,
                    "logprob": d.get(tid),
                    "bytes": list(tok.encode()),
                    "top_logprobs": [
                        {"token": (t := self.token(i)), "logprob": lp, "bytes": list(t.encode())}
                        for i, lp in best
                    ],
                }
            )
        return {"content": content}


def sse(obj: dict[str, Any] | str) -> str:
    """One server-sent event (``data: <json>``)."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


DONE = sse("[DONE]")
