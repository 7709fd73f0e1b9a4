"""Shared-prefix workload, after the paper's Fig. 16 (few-shot WMT16 English->German).

Every prompt = one common prefix of ``prefix_len`` token ids (the instruction + k examples;
the paper used 80 tokens for 1-shot and 341 for 5-shot) followed by a per-request suffix (the
sentence to translate). SYNTHETIC: the prefix and suffixes are random ids and the suffix/output
lengths are uniform in ``[suffix_len_min, suffix_len_max]`` / ``[output_len_min, output_len_max]``
(default 20-40 tokens, short news sentences), not WMT16 text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError
from kvlab.workloads.synthetic import _positive_int, sample_lengths


def shared_prefix(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    prefix_len = _positive_int(params, "prefix_len")
    b = {k: _positive_int(params, k) for k in
         ("suffix_len_min", "suffix_len_max", "output_len_min", "output_len_max")}
    for what in ("suffix_len", "output_len"):
        if b[f"{what}_min"] > b[f"{what}_max"]:
            raise WorkloadError(f"workload.{what}_min must be <= workload.{what}_max")
    if prefix_len + b["suffix_len_min"] + b["output_len_min"] > ctx.max_total_len:
        raise WorkloadError(f"workload.prefix_len={prefix_len} leaves no room under "
                            f"max_total_len={ctx.max_total_len}")

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.integers(b["suffix_len_min"], b["suffix_len_max"] + 1, size=size)
        o = rng.integers(b["output_len_min"], b["output_len_max"] + 1, size=size)
        return prefix_len + s, o

    pairs = sample_lengths(ctx, num, draw, "shared_prefix")
    tok_rng = ctx.rng("tokens")
    prefix = ctx.random_token_ids(ctx.rng("prefix"), prefix_len)
    return [RequestBody(p, o, prefix + ctx.random_token_ids(tok_rng, p - prefix_len)) for p, o in pairs]
