"""Synthetic generators with independent prompt/output lengths: sharegpt, alpaca, fixed, uniform.

Prompts are random token ids (see ``WorkloadContext.random_token_ids``); in the simulator only
their lengths matter, and random ids make accidental prefix-cache hits between requests vanishingly
unlikely. Length pairs that fail the workload's filter (``max_prompt_len``, ``max_total_len``) are
redrawn, like the paper's trace generator, which kept only ``input + output < 2048`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kvlab.workloads.base import RequestBody, WorkloadContext, WorkloadError
from kvlab.workloads.lengths import length_shapes, paper_length_distributions, shape_error

PairSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def sample_lengths(ctx: WorkloadContext, num: int, draw: PairSampler, what: str) -> list[tuple[int, int]]:
    """``num`` (prompt_len, output_len) pairs that pass the filter, drawn from stream ``lengths``."""
    rng = ctx.rng("lengths")
    kept: list[tuple[int, int]] = []
    for _ in range(200):
        if len(kept) >= num:
            break
        p, o = draw(rng, max(num - len(kept), 64))
        kept.extend((int(a), int(b)) for a, b in zip(p, o) if ctx.fits(int(a), int(b)))
    if len(kept) < num:
        raise WorkloadError(
            f"{what}: almost no length pair passes the filter (max_prompt_len={ctx.max_prompt_len}, "
            f"max_total_len={ctx.max_total_len}); loosen workload.max_prompt_len / max_total_len"
        )
    return kept[:num]


def bodies_from_lengths(ctx: WorkloadContext, pairs: list[tuple[int, int]]) -> list[RequestBody]:
    rng = ctx.rng("tokens")
    return [RequestBody(p, o, ctx.random_token_ids(rng, p)) for p, o in pairs]


def length_shape(dataset: str, params: Mapping[str, Any]) -> str:
    """The validated ``workload.length_shape`` of a ``sharegpt``/``alpaca`` workload."""
    shape = params.get("length_shape", "base")
    if not isinstance(shape, str) or shape not in length_shapes(dataset):
        raise WorkloadError(shape_error(dataset, shape))
    return shape


def paper_dataset(dataset: str) -> Callable[[Mapping[str, Any], int, WorkloadContext], list[RequestBody]]:
    """A generator drawing lengths from the synthetic ShareGPT/Alpaca-like distributions, in the
    shape variant ``workload.length_shape`` (``base`` by default; see ``lengths.LENGTH_SHAPES``)."""

    def generate(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
        inp, out = paper_length_distributions(dataset, length_shape(dataset, params))

        def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
            return inp.sample(rng, size), out.sample(rng, size)

        return bodies_from_lengths(ctx, sample_lengths(ctx, num, draw, dataset))

    return generate


def _positive_int(params: Mapping[str, Any], key: str) -> int:
    v = params[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise WorkloadError(f"workload.{key} must be an integer >= 1, got {v!r}")
    return v


def fixed(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    p, o = _positive_int(params, "prompt_len"), _positive_int(params, "output_len")
    if not ctx.fits(p, o):
        raise WorkloadError(
            f"workload.prompt_len + output_len = {p + o} exceeds max_total_len={ctx.max_total_len} "
            f"(or prompt_len > max_prompt_len={ctx.max_prompt_len})"
        )
    return bodies_from_lengths(ctx, [(p, o)] * num)


def uniform(params: Mapping[str, Any], num: int, ctx: WorkloadContext) -> list[RequestBody]:
    bounds = {k: _positive_int(params, k) for k in
              ("prompt_len_min", "prompt_len_max", "output_len_min", "output_len_max")}
    for what in ("prompt_len", "output_len"):
        if bounds[f"{what}_min"] > bounds[f"{what}_max"]:
            raise WorkloadError(f"workload.{what}_min must be <= workload.{what}_max")

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        p = rng.integers(bounds["prompt_len_min"], bounds["prompt_len_max"] + 1, size=size)
        o = rng.integers(bounds["output_len_min"], bounds["output_len_max"] + 1, size=size)
        return p, o

    return bodies_from_lengths(ctx, sample_lengths(ctx, num, draw, "uniform"))
