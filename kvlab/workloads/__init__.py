"""Workloads: request generators and trace loaders behind one entry point, :func:`build_workload`.

``conf/workload/<name>.yaml`` holds one generator's config; ``name`` (= the file stem) picks the
generator. Keys common to all generators: ``rate``, ``num_requests`` | ``duration_s``, ``seed``,
``n``, ``beam_width``, ``max_prompt_len``, ``max_total_len``; see docs/workloads.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kvlab.workloads.arrivals import is_offline, poisson_arrivals
from kvlab.workloads.base import (
    TEXT_TOKEN_ID_LOW,
    RequestBody,
    TraceRequest,
    Workload,
    WorkloadContext,
    WorkloadError,
)
from kvlab.workloads.chat import chat
from kvlab.workloads.few_shot import few_shot
from kvlab.workloads.file_loader import load_file
from kvlab.workloads.lengths import PAPER_MEANS
from kvlab.workloads.multiturn import multiturn
from kvlab.workloads.prompts import prompts
from kvlab.workloads.shared_prefix import shared_prefix
from kvlab.workloads.synthetic import fixed, length_shape, paper_dataset, uniform

__all__ = ["build_workload", "TraceRequest", "Workload", "WorkloadError", "GENERATORS", "COMMON_KEYS"]

Generator = Callable[[Mapping[str, Any], int, WorkloadContext], list[RequestBody]]


@dataclass(frozen=True)
class GeneratorSpec:
    fn: Generator
    keys: dict[str, Any]  # generator-specific keys and their defaults
    what: str  # for the description; says "SYNTHETIC" where it is


COMMON_KEYS: dict[str, Any] = {
    "name": None, "rate": None, "num_requests": None, "duration_s": None, "seed": 0,
    "n": 1, "beam_width": 1, "max_prompt_len": None, "max_total_len": None,
    # consumed by the experiment driver / metrics, not by the generators:
    "warmup_s": 0.0, "ignore_eos": True, "temperature": 1.0, "sampling_seed": None,
}

_PAPER = "SYNTHETIC {}-like lengths (means matched to the vLLM paper: {:.2f} in / {:.2f} out)"

GENERATORS: dict[str, GeneratorSpec] = {
    "sharegpt": GeneratorSpec(paper_dataset("sharegpt"), {"length_shape": "base"},
                              _PAPER.format("ShareGPT", *PAPER_MEANS["sharegpt"])),
    "alpaca": GeneratorSpec(paper_dataset("alpaca"), {"length_shape": "base"},
                            _PAPER.format("Alpaca", *PAPER_MEANS["alpaca"])),
    "fixed": GeneratorSpec(fixed, {"prompt_len": 128, "output_len": 128}, "SYNTHETIC fixed lengths"),
    "uniform": GeneratorSpec(
        uniform, {"prompt_len_min": 16, "prompt_len_max": 256, "output_len_min": 16, "output_len_max": 256},
        "SYNTHETIC uniform lengths"),
    "file": GeneratorSpec(load_file, {"path": None, "shuffle": True}, "trace file"),
    "shared_prefix": GeneratorSpec(
        shared_prefix,
        {"prefix_len": 80, "suffix_len_min": 20, "suffix_len_max": 40,
         "output_len_min": 20, "output_len_max": 40},
        "SYNTHETIC shared-prefix (few-shot translation-like, Fig. 16)"),
    "prompts": GeneratorSpec(prompts, {"output_len_min": 32, "output_len_max": 96},
                             "built-in English instructions through the chat template"),
    "chat": GeneratorSpec(chat, {"new_prob": 0.1, "max_history": 1024, "max_output": 1024, "mean_turns": 4},
                          "SYNTHETIC multi-turn chat (ShareGPT-like turns, Fig. 17)"),
    "multiturn": GeneratorSpec(
        multiturn,
        {"system_prompts": 8, "system_len_min": 200, "system_len_max": 800, "system_zipf": 1.0,
         "mean_turns": 4, "concurrent": 32, "max_output": 512},
        "SYNTHETIC multi-turn chat with shared system prompts (Zipf popularity), full history"),
    "few_shot": GeneratorSpec(
        few_shot,
        {"tasks": 16, "shots": 5, "header_len": 64, "example_len_min": 40, "example_len_max": 100,
         "question_len_min": 20, "question_len_max": 60, "output_len_min": 4, "output_len_max": 32,
         "task_zipf": 1.0},
        "SYNTHETIC few-shot prompts: common header + a task's k examples + a question (Zipf tasks)"),
}


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from kvlab.config import to_plain  # the one config conversion

    return dict(to_plain(cfg))


def _rate(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("inf", "infinity", ".inf")):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v <= 0:
        raise WorkloadError(f"workload.rate must be > 0 req/s, null or inf (all at t=0), got {v!r}")
    return None if math.isinf(v) else float(v)


def _int_at_least(params: Mapping[str, Any], key: str, low: int) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise WorkloadError(f"workload.{key} must be an integer >= {low}, got {v!r}")
    return v


def _number_at_least(params: Mapping[str, Any], key: str, low: float) -> float:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low:
        raise WorkloadError(f"workload.{key} must be a number >= {low:g}, got {v!r}")
    return float(v)


def build_workload(
    cfg_workload: Mapping[str, Any], *, seed: int, vocab_size: int, max_model_len: int, tokenizer: Any = None
) -> Workload:
    """Build a deterministic workload from its config (a dict or Hydra DictConfig).

    ``seed`` is the experiment seed (combined with ``workload.seed``); ``vocab_size`` bounds
    synthetic token ids; ``max_model_len`` sets the default length filter (prompt + output <
    max_model_len, the paper's ``< 2048``); ``tokenizer`` (anything with ``encode(str) -> list[int]``)
    is needed only for trace files holding text. Raises ``WorkloadError`` (a ``ValueError``) that
    names the offending key. Pure: no state is kept between calls.
    """
    params = _plain(cfg_workload)
    name = params.get("name")
    if name not in GENERATORS:
        raise WorkloadError(f"unknown workload.name {name!r}; choose one of: {', '.join(sorted(GENERATORS))}")
    spec = GENERATORS[name]
    allowed = {**COMMON_KEYS, **spec.keys}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise WorkloadError(f"unknown key workload.{unknown[0]} for workload {name!r}; "
                            f"allowed: {', '.join(sorted(allowed))}")
    params = {**allowed, **{k: v for k, v in params.items() if v is not None or k in COMMON_KEYS}}

    rate = _rate(params["rate"])
    num, duration = params["num_requests"], params["duration_s"]
    if (num is None) == (duration is None):
        raise WorkloadError("set exactly one of workload.num_requests and workload.duration_s "
                            f"(got num_requests={num!r}, duration_s={duration!r})")
    if num is not None:
        num = _int_at_least(params, "num_requests", 1)
    elif _number_at_least(params, "duration_s", 0.0) == 0:
        raise WorkloadError("workload.duration_s must be > 0 seconds, got 0")
    elif rate is None:
        raise WorkloadError("workload.duration_s needs a finite workload.rate (Poisson arrivals)")
    n, beam = _int_at_least(params, "n", 1), _int_at_least(params, "beam_width", 1)
    if n > 1 and beam > 1:
        raise WorkloadError("use either workload.n > 1 or workload.beam_width > 1, not both")
    _number_at_least(params, "warmup_s", 0.0)
    _number_at_least(params, "temperature", 0.0)
    if not isinstance(params["ignore_eos"], bool):
        raise WorkloadError(f"workload.ignore_eos must be true or false, got {params['ignore_eos']!r}")
    if params["sampling_seed"] is not None and not isinstance(params["sampling_seed"], int):
        raise WorkloadError(f"workload.sampling_seed must be an integer or null, "
                            f"got {params['sampling_seed']!r}")
    if not isinstance(params["seed"], int):
        raise WorkloadError(f"workload.seed must be an integer offset, got {params['seed']!r}")
    if vocab_size <= TEXT_TOKEN_ID_LOW + 1:
        raise WorkloadError(f"vocab_size={vocab_size} too small for synthetic ids "
                            f"(need > {TEXT_TOKEN_ID_LOW + 1})")
    for key in ("max_prompt_len", "max_total_len"):
        if params[key] is None:
            params[key] = max_model_len - 1  # the paper: input + output < max length (2048 for OPT)
        _int_at_least(params, key, 2 if key == "max_total_len" else 1)
    params["max_total_len"] = min(params["max_total_len"], max_model_len)

    ctx = WorkloadContext(seed=int(seed), seed_offset=params["seed"], vocab_size=vocab_size,
                          max_model_len=max_model_len, max_prompt_len=params["max_prompt_len"],
                          max_total_len=params["max_total_len"], tokenizer=tokenizer)
    shape = length_shape(name, params) if "length_shape" in spec.keys else "base"  # a bad one fails here
    arrivals = poisson_arrivals(ctx.rng("arrivals"), rate, num=num,
                                duration_s=None if num is not None else float(duration))
    bodies = spec.fn(params, len(arrivals), ctx) if len(arrivals) else []
    requests = [
        TraceRequest(f"{name}-{i}", float(t), b.prompt_token_ids, b.prompt, b.prompt_len, b.output_len,
                     n=n, beam_width=beam, messages=b.messages)
        for i, (t, b) in enumerate(zip(arrivals, bodies))
    ]
    what = f"{spec.what} {params['path']!r}" if name == "file" else spec.what
    what += f", length_shape={shape}" if shape != "base" else ""
    arrive = "all at t=0 (offline)" if is_offline(rate) else f"Poisson {rate:g} req/s"
    sampling = f", n={n}" if n > 1 else (f", beam_width={beam}" if beam > 1 else "")
    desc = (f"{name}: {what}; {len(requests)} requests, {arrive}{sampling}; "
            f"filter prompt<={ctx.max_prompt_len}, prompt+output<={ctx.max_total_len}")
    return Workload(name=name, description=desc, requests=requests, config=params)
