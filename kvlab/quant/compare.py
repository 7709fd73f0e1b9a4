"""The comparison loop: per scheme, accuracy on the real model, then the two serving runs.

The unquantized baseline runs first: its log-probabilities (saved under ``OUT/.ref``, removed at
the end), greedy tokens and KV bytes per token are what the other schemes are measured against.
One copy of the weights serves every scheme's executor (:func:`kvlab.quant.serving.shared_weights`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.quant import accuracy as acc
from kvlab.quant.schemes import BASELINE, scheme_overrides
from kvlab.quant.serving import cpu_overrides, run_serving, shared_weights, sim_overrides
from kvlab.quant.settings import Settings
from kvlab.quant.text import eval_contexts, greedy_prompts, passkey_cases


def scheme_config(scheme: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved run config of ``scheme`` (the real model on the CPU unless overridden)."""
    from kvlab.llm import compose_config

    base = ["device=cpu", "dtype=float32", "kv.swap_space_gib=0", "show_progress=false"]
    return compose_config("smollm2-135m", "paged", "fcfs", "torch",
                          [*base, *scheme_overrides(scheme), *overrides])


class _Progress:
    def __init__(self, n: int) -> None:
        self.n, self.t0 = n, time.perf_counter()

    def __call__(self, i: int, scheme: str, what: str) -> None:
        print(f"[{i + 1}/{self.n}] {scheme:>9}: {what} ({time.perf_counter() - self.t0:.0f} s)", flush=True)


def accuracy_row(engine: Any, scheme: str, s: Settings, inputs: dict[str, Any], ref: dict[str, Any],
                 ref_dir: Path, say: Any) -> dict[str, float]:
    """Perplexity/KL/top-1, greedy agreement and passkey accuracy of one engine."""
    is_ref = scheme == BASELINE
    score = acc.TextScore()
    for j, ids in enumerate(inputs["contexts"]):
        say(f"perplexity, context {j + 1}/{len(inputs['contexts'])} ({len(ids)} tokens, chunks of {s.ppl_chunk})")
        acc.score_context(engine, ids, s.ppl_chunk, score, ref_dir / f"ctx{j}.pt", is_ref)
    engine.scheduler.max_num_batched_tokens = s.prefill_budget
    say(f"greedy, {len(inputs['greedy'])} prompts x {s.greedy_tokens} tokens, with passkey, "
        f"{len(inputs['passkey'])} prompts of {', '.join(map(str, s.passkey_lengths))} tokens")
    greedy, hits = acc.generations(engine, inputs["greedy"], s.greedy_tokens, inputs["passkey"])
    if is_ref:
        ref["greedy"] = greedy
    match = acc.greedy_match(ref["greedy"], greedy)
    return {"ppl": score.ppl, "ppl_tokens": float(score.tokens),
            "kl_mean": score.kl / score.tokens if not is_ref else 0.0,
            "top1_agreement": score.top1_agree / score.tokens,
            "greedy_match_tokens": float(np.mean(match)),
            "greedy_identical": float(np.mean([m == s.greedy_tokens for m in match])),
            "passkey_accuracy": float(np.mean(hits)),
            "passkey_hits": ";".join(f"{c.length}@{c.depth}:{int(h)}" for c, h in zip(inputs["passkey"], hits))}


Row = dict[str, Any]


def compare(schemes: Sequence[str], s: Settings, out: Path,
            on_row: Callable[[list[Row]], None] | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Run every scheme (``schemes[0]`` must be the baseline); rows for summary.csv and run metadata.
    ``on_row`` gets the rows so far after each scheme (the command rewrites summary.csv with them, so
    an interrupted run keeps what it finished)."""
    if not schemes or schemes[0] != BASELINE:
        raise ValueError(f"the comparison needs {BASELINE!r} first (the reference), got {list(schemes)}")
    ref_dir = out / ".ref"
    ref_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(len(schemes))
    rows: list[dict[str, Any]] = []
    ref: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    longest = max([s.ppl_context_tokens, *s.passkey_lengths]) + 64
    acc_blocks = math.ceil(2 * longest / 16)  # room for two of the longest requests at once
    from kvlab.engine import LLMEngine

    with shared_weights():
        for i, scheme in enumerate(schemes):
            def say(what: str, i: int = i, scheme: str = scheme) -> None:
                progress(i, scheme, what)

            say("building the engine")
            engine = LLMEngine(scheme_config(scheme, [f"executor.num_threads={s.threads}", f"seed={s.seed}",
                                                      f"allocator.num_blocks={acc_blocks}"]))
            if not inputs:
                tok = engine.tokenizer
                inputs["contexts"], files = eval_contexts(tok, s.ppl_context_tokens, s.ppl_num_contexts)
                inputs["greedy"] = greedy_prompts(tok, s.greedy_prompts)
                inputs["passkey"] = passkey_cases(tok, s.passkey_lengths, s.passkey_depths, s.seed)
                meta["text"] = ", ".join(Path(f).name for f in files)
            row: dict[str, Any] = {"scheme": scheme}
            row.update(accuracy_row(engine, scheme, s, inputs, ref, ref_dir, say))
            del engine
            if scheme == BASELINE:
                probe = LLMEngine(scheme_config(scheme, ["allocator.num_blocks=1", "executor.num_threads=1"]))
                ref["bytes_per_token"] = probe.block_bytes / probe.block_size
                del probe
            budget = int(ref["bytes_per_token"] * s.cpu_budget_tokens)
            say(f"serving on the CPU, budget {budget / 2**20:.1f} MiB ({s.cpu_budget_tokens} unquantized tokens)")
            cfg = scheme_config(scheme, cpu_overrides(budget, s.cpu_requests, s.cpu_prompt_len, s.cpu_output_len,
                                                      s.threads) + [f"seed={s.seed}"])
            row.update(run_serving(cfg, out / "runs" / scheme / "cpu", ""))
            expected = budget / row["bytes_per_token"]
            row["capacity_vs_budget_pct"] = (row["capacity_tokens"] / expected - 1.0) * 100.0
            say(f"simulator, {s.sim_model} on {s.sim_hardware}, {s.sim_requests} requests")
            cfg = scheme_config(scheme, sim_overrides(s.sim_model, s.sim_hardware, s.sim_requests) + [f"seed={s.seed}"])
            row.update(run_serving(cfg, out / "runs" / scheme / "sim", "sim_"))
            say(f"done: ppl {row['ppl']:.4f}, KL {row['kl_mean']:.2e}, {row['bytes_per_token']:.0f} B/token, "
                f"{row['output_throughput']:.1f} tok/s CPU, {row['sim_output_throughput']:.0f} tok/s sim")
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    meta["ppl_tokens"] = int(rows[0]["ppl_tokens"])
    meta["cpu_budget_bytes"] = int(ref["bytes_per_token"] * s.cpu_budget_tokens)
    return rows, meta
