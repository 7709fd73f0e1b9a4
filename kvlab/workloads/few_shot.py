"""Few-shot prompting: many tasks, each a fixed instruction + k worked examples + a new question.

Every prompt = a header common to all tasks (``header_len`` tokens: the deployment's preamble)
+ the task's ``shots`` examples (each ``example_len_min..example_len_max`` tokens, fixed per
task) + a fresh question (``question_len_min..max``). Tasks are picked with Zipf popularity
(``task_zipf``), so a prefix cache sees one short prefix shared by everyone, a few long
prefixes shared by many requests, and a tail of rarely used tasks that compete for the cache.
Outputs are short (``output_len_min..max``), as for classification or extraction. The
single-task version with one prefix is ``shared_prefix`` (the vLLM paper's Fig. 16).

SYNTHETIC: random token ids and uniform lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError
from kvlab.workloads.multiturn import zipf_weights
from kvlab.workloads.synthetic import _positive_int


def few_shot(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    tasks = _positive_int(params, "tasks")
    shots = _positive_int(params, "shots")
    header = _positive_int(params, "header_len")
    lens = {k: _positive_int(params, k) for k in ("example_len_min", "example_len_max", "question_len_min",
                                                   "question_len_max", "output_len_min", "output_len_max")}
    for what in ("example_len", "question_len", "output_len"):
        if lens[f"{what}_min"] > lens[f"{what}_max"]:
            raise WorkloadError(f"workload.{what}_min must be <= workload.{what}_max")
    zipf = params["task_zipf"]
    if isinstance(zipf, bool) or not isinstance(zipf, (int, float)) or zipf < 0:
        raise WorkloadError(f"workload.task_zipf must be a number >= 0, got {zipf!r}")
    longest = (header + shots * lens["example_len_max"] + lens["question_len_max"])
    if longest > ctx.max_prompt_len or longest + lens["output_len_max"] > ctx.max_total_len:
        raise WorkloadError(f"workload: header_len + shots x example_len_max + question_len_max = {longest} "
                            f"does not fit max_prompt_len={ctx.max_prompt_len} / max_total_len={ctx.max_total_len}")

    prng, rng, tok = ctx.rng("tasks"), ctx.rng("few_shot"), ctx.rng("tokens")
    head = ctx.random_token_ids(prng, header)
    prefixes = []
    for _ in range(tasks):
        p = list(head)
        for _ in range(shots):
            p += ctx.random_token_ids(prng, int(prng.integers(lens["example_len_min"], lens["example_len_max"] + 1)))
        prefixes.append(p)
    weights = zipf_weights(tasks, float(zipf))
    bodies = []
    for _ in range(num):
        prefix = prefixes[int(rng.choice(tasks, p=weights))]
        q = ctx.random_token_ids(tok, int(rng.integers(lens["question_len_min"], lens["question_len_max"] + 1)))
        out = int(rng.integers(lens["output_len_min"], lens["output_len_max"] + 1))
        bodies.append(RequestBody(len(prefix) + len(q), out, prefix + q))
    return bodies
