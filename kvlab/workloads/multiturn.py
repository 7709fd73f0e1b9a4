"""Multi-turn chat with shared system prompts: the prefix-cache workload of a chat service.

Every conversation starts with one of ``system_prompts`` system prompts, picked with Zipf
popularity (exponent ``system_zipf``: a few assistants carry most of the traffic), each
``system_len_min..system_len_max`` tokens long. ``concurrent`` conversations are open at once;
each arrival is the next turn of a random open one, and a conversation that has had its turns
(``1 + Geometric``, mean ``mean_turns``) or would outgrow ``max_prompt_len`` is replaced by a new
one. A turn's prompt is the system prompt + every earlier query and reply + the new query, never
truncated (a chat that no longer fits ends instead), so the whole history is a cacheable prefix;
the reply joins the history exactly as the next prompt will contain it.

SYNTHETIC: query and reply lengths follow the ShareGPT-like distributions of ``lengths.py``
(replies capped at ``max_output``), token ids are random. With the defaults the system prompt is
roughly a quarter of all prompt tokens and the history (earlier turns) about half; the workload
description reports the measured shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError
from kvlab.workloads.lengths import paper_length_distributions
from kvlab.workloads.synthetic import _positive_int


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Popularity of ``n`` items: weight of rank ``r`` proportional to ``1 / r**s``."""
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass
class _Chat:
    turns_left: int
    history: list[int] = field(default_factory=list)


def multiturn(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    k = _positive_int(params, "system_prompts")
    lo, hi = _positive_int(params, "system_len_min"), _positive_int(params, "system_len_max")
    if lo > hi:
        raise WorkloadError("workload.system_len_min must be <= workload.system_len_max")
    zipf = params["system_zipf"]
    if isinstance(zipf, bool) or not isinstance(zipf, (int, float)) or zipf < 0:
        raise WorkloadError(f"workload.system_zipf must be a number >= 0, got {zipf!r}")
    mean_turns = params["mean_turns"]
    if isinstance(mean_turns, bool) or not isinstance(mean_turns, (int, float)) or mean_turns < 1:
        raise WorkloadError(f"workload.mean_turns must be >= 1, got {mean_turns!r}")
    concurrent = _positive_int(params, "concurrent")
    max_output = _positive_int(params, "max_output")
    if hi + 2 > min(ctx.max_prompt_len, ctx.max_total_len - 1):
        raise WorkloadError(f"workload.system_len_max={hi} leaves no room for a query under "
                            f"max_prompt_len={ctx.max_prompt_len}, max_total_len={ctx.max_total_len}")

    srng, rng, tok = ctx.rng("system"), ctx.rng("multiturn"), ctx.rng("tokens")
    systems = [ctx.random_token_ids(srng, int(srng.integers(lo, hi + 1))) for _ in range(k)]
    weights = zipf_weights(k, float(zipf))
    query_dist, reply_dist = paper_length_distributions("sharegpt")

    def new_chat() -> _Chat:
        extra = int(rng.geometric(1.0 / mean_turns)) - 1 if mean_turns > 1 else 0
        return _Chat(1 + extra, list(systems[int(rng.choice(k, p=weights))]))

    chats = [new_chat() for _ in range(concurrent)]
    bodies: list[RequestBody] = []
    while len(bodies) < num:
        i = int(rng.integers(concurrent))
        chat = chats[i]
        query = ctx.random_token_ids(tok, int(query_dist.sample(rng, 1)[0]))
        prompt = chat.history + query
        room = min(ctx.max_total_len - len(prompt), max_output)
        if len(prompt) > ctx.max_prompt_len or room < 1:
            chats[i] = new_chat()  # the conversation no longer fits the context: a new one starts
            continue
        out = min(int(reply_dist.sample(rng, 1)[0]), room)
        bodies.append(RequestBody(len(prompt), out, prompt))
        chat.history = prompt + ctx.random_token_ids(tok, out)
        chat.turns_left -= 1
        if chat.turns_left <= 0:
            chats[i] = new_chat()
    return bodies
