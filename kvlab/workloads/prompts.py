"""``workload=prompts``: real English instructions, for runs on a real model.

Synthetic token ids make a real model print noise. This generator cycles through a small set of
instructions written for kvlab (questions of the kind a chat assistant gets), formats each with
the model's chat template when the tokenizer has one, and draws output lengths uniformly in
``[output_len_min, output_len_max]``. Prompts are short (20–60 tokens with the template), so the
main command's real-model run finishes in about a minute on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError

INSTRUCTIONS = [
    "Explain in two sentences why the sky looks blue.",
    "Write a short poem about a lighthouse keeper.",
    "What are three tips for writing clean Python code?",
    "Summarize the plot of a detective story in one paragraph.",
    "How does a hash table handle collisions?",
    "Give me a recipe idea that uses tomatoes and rice.",
    "Why do cats purr? Answer briefly.",
    "List four planets of the solar system and one fact about each.",
    "What is the difference between a process and a thread?",
    "Describe a calm morning at the beach.",
    "How can I improve my sleep? Give practical advice.",
    "Explain what a GPU is to a ten-year-old.",
    "Write a friendly email inviting a colleague to lunch.",
    "What causes the seasons on Earth?",
    "Suggest a name for a small bakery and explain it.",
    "What is memory fragmentation in an allocator?",
]


def prompts(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    tok = ctx.tokenizer
    if tok is None:
        raise WorkloadError("workload=prompts needs the model's tokenizer (use it with a real model, "
                            "executor=torch or auto)")
    lo, hi = int(params["output_len_min"]), int(params["output_len_max"])
    if not 1 <= lo <= hi:
        raise WorkloadError(f"workload.output_len_min/max must satisfy 1 <= min <= max, got {lo}, {hi}")
    rng = ctx.rng("lengths")
    bodies = []
    for i in range(num):
        text = INSTRUCTIONS[i % len(INSTRUCTIONS)]
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        ids = list(tok.encode(text))
        out = int(rng.integers(lo, hi + 1))
        if not ctx.fits(len(ids), out):
            raise WorkloadError(f"workload=prompts: prompt {i} ({len(ids)} tokens) + {out} output tokens "
                                f"exceed max_total_len={ctx.max_total_len}")
        bodies.append(RequestBody(len(ids), out, prompt_token_ids=ids, prompt=text))
    return bodies
