"""Multi-turn chatbot workload, after the paper's Fig. 17 (OPT-13B on ShareGPT conversations).

Each arrival starts a new conversation with probability ``new_prob`` (paper-era default 0.1) or
continues a random unfinished one. A turn's prompt is the conversation history (earlier queries
and replies) plus the new query, truncated to its LAST ``max_history`` tokens (paper: 1024); the
output is the reply length capped at ``max_output`` (paper text: at most 1024) and at
``max_total_len - prompt_len``. The KV cache is not kept between rounds by the engine, but the
history token ids stay identical across turns, so a prefix cache can hit them while the history
is shorter than ``max_history`` (after that the window slides and the prefix changes, as in reality).

SYNTHETIC: query and reply lengths come from the ShareGPT-like input/output distributions
(``lengths.py``), token ids are random, and the number of turns per conversation is
``1 + Geometric`` with mean ``mean_turns``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError
from kvlab.workloads.lengths import paper_length_distributions
from kvlab.workloads.synthetic import _positive_int


@dataclass
class _Conversation:
    turns_left: int
    history: list[int] = field(default_factory=list)


def chat(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    new_prob = params["new_prob"]
    if not isinstance(new_prob, (int, float)) or not 0.0 < new_prob <= 1.0:
        raise WorkloadError(f"workload.new_prob must be in (0, 1], got {new_prob!r}")
    mean_turns = params["mean_turns"]
    if not isinstance(mean_turns, (int, float)) or mean_turns < 1:
        raise WorkloadError(f"workload.mean_turns must be >= 1, got {mean_turns!r}")
    max_history = min(_positive_int(params, "max_history"), ctx.max_prompt_len, ctx.max_total_len - 1)
    max_output = _positive_int(params, "max_output")
    if max_history < 1:
        raise WorkloadError(f"workload.max_total_len={ctx.max_total_len} leaves no room for a prompt")

    query_dist, reply_dist = paper_length_distributions("sharegpt")
    rng, tok_rng = ctx.rng("chat"), ctx.rng("tokens")
    active: list[_Conversation] = []
    bodies: list[RequestBody] = []
    for _ in range(num):
        if not active or rng.random() < new_prob:
            # 1 + Geometric(p) has mean 1 / p; p = 1 / mean_turns
            extra = int(rng.geometric(1.0 / mean_turns)) - 1 if mean_turns > 1 else 0
            active.append(_Conversation(turns_left=1 + extra))
            conv = active[-1]
        else:
            conv = active[int(rng.integers(len(active)))]
        query = ctx.random_token_ids(tok_rng, int(query_dist.sample(rng, 1)[0]))
        prompt = (conv.history + query)[-max_history:]
        output_len = min(int(reply_dist.sample(rng, 1)[0]), max_output, ctx.max_total_len - len(prompt))
        bodies.append(RequestBody(len(prompt), output_len, prompt))
        # the reply the model "said" this turn joins the history with the query
        conv.history = conv.history + query + ctx.random_token_ids(tok_rng, output_len)
        conv.turns_left -= 1
        if conv.turns_left <= 0:
            active.remove(conv)
    return bodies
