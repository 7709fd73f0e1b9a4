"""Paper-era mode's multi-GPU term: the 2023 engine's Ray control plane, derived from a published measurement.

Until vLLM v0.2.7 every tensor-parallel rank was a Ray actor, and every step the driver called each
worker with the step's sequence metadata, serialized once per call (vllm-project/vllm PR #2221,
"Use NCCL instead of ray for control-plane communication to remove serialization overhead"). That
PR moved one worker into the driver, sent the inputs to the others by NCCL broadcast, and published
LLaMA-70B's offline throughput on 8x A100-40GB before and after, on two workloads (:data:`POINTS`).
Nothing in it comes from the vLLM paper's figures.

Both runs of a workload schedule identically (every request at t=0: the step sequence depends on
the scheduler and the KV pool only), so what the Ray calls cost over a run is::

    delta = num_requests / before - num_requests / after          seconds

and the run's steps (simulated with vLLM v0.2.6's scheduler, :data:`ENGINE`) must explain it.
Per step, for N workers, the mode's form is the mechanism's::

    N x (w_step + scale x payload(step))     a Ray call per worker, plus its serialized metadata

``payload(step)`` is what v0.2.6 sent: for every scheduled sequence a group object and its FULL
token lists and block table, so it grows with each sequence's context. Its shape (µs per
sequence, µs per int) is MEASURED by :mod:`kvlab.paperlib.era_payload` (pickle round trips of
stand-ins with v0.2.6's fields); the two PR points then fix ``w_step`` and ``scale`` together. The
paper's engine sent less per sequence (a prompt's tokens once, then only the last token, and the
block table), so the mode's per-sequence and per-int worker costs are ``scale`` times THAT
layout's measured costs: ``hardware.engine_per_worker_step_us`` / ``engine_per_worker_seq_us`` /
``engine_per_worker_int_us`` in ``conf/experiment/era/paper2023.yaml``; Fig. 12 is then predicted
without looking back. For the record the derivation also solves the form with a constant
per-sequence cost (``constant_seq``, the mode's form until 2026-12-07) and each one-term form fitted
on the ShareGPT point and judged on the other (``per_step``, ``per_seq``).
Assumptions, stated: the paper's engine (2023, the same Ray ``_run_workers`` design) paid the same
per call and the same per serialized byte as v0.2.6 (``scale`` carries both engines' hosts), and the
cost scales with the number of workers (the driver serialized one call per worker).
``python -m kvlab.paperlib.era_tp`` writes ``results/paper/era2023/tp_fit.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvlab.paperlib import era_payload
from kvlab.paperlib.era_fit import ERA, ERA_YAML, REPO, yaml_hardware

SOURCE = "https://github.com/vllm-project/vllm/pull/2221 (description, 2023-12-20)"
WORKERS = 8  # LLaMA-70B on 8x A100-40G, tensor parallel 8
# vLLM v0.2.6's defaults for this model: max_num_batched_tokens = max(max_model_len 4096, 2048),
# max_num_seqs 256, max_paddings 256, block 16, gpu_memory_utilization 0.9, swap 4 GiB, prompts in
# steps of their own (padded to the longest), recompute preemption. Timing does not matter here
# (every request at t=0), so the datasheet roofline runs it.
ENGINE = ["executor=sim", "model=llama-2-70b", "hardware=a100-40gb", "allocator=paged", "allocator.block_size=16",
          "scheduler=fcfs", "scheduler.chunked_prefill=false", "scheduler.prefill_alone=true",
          "scheduler.max_paddings=256", "scheduler.max_num_batched_tokens=4096", "scheduler.max_num_seqs=256",
          "kv.gpu_memory_utilization=0.9", "kv.swap_space_gib=4", "workload.rate=null", "show_progress=false"]
# benchmarks/benchmark_throughput.py: ShareGPT, 1000 prompts (prompt < 1024, prompt + output < 2048
# tokens; kvlab's ShareGPT is synthetic, its means matched to the paper's), and fixed lengths.
POINTS = {
    "sharegpt": {"role": "fit", "num_requests": 1000, "before_req_s": 3.01, "after_req_s": 5.08,
                 "overrides": ["workload=sharegpt", "workload.num_requests=1000", "workload.max_prompt_len=1023",
                               "workload.max_total_len=2047"]},
    "fixed_1031_317": {"role": "held_out", "num_requests": 512, "before_req_s": 2.48, "after_req_s": 3.48,
                       "overrides": ["workload=fixed", "workload.num_requests=512", "workload.prompt_len=1031",
                                     "workload.output_len=317"]},
}
PAYLOAD_JSON = REPO / "results" / "paper" / "era2023" / "payload_fit.json"
FORMS = {"per_step": "steps", "per_seq": "seq_steps"}  # one-term forms: what they are summed over
YAML_KEYS = {"w_step": "engine_per_worker_step_us", "w_seq": "engine_per_worker_seq_us",
             "w_int": "engine_per_worker_int_us"}


def schedule_totals(overrides: list[str]) -> dict[str, float]:
    """Steps and scheduled sequences summed over steps, for one workload under :data:`ENGINE`."""
    from kvlab.calibrate.runs import StepRecorder, compose, run_workload
    from kvlab.executor.sim import build_sim_executor

    cfg = compose([*ENGINE, *overrides])
    rec = StepRecorder(build_sim_executor(cfg))
    m = run_workload(cfg, rec)["metrics"]
    feats = [f for f, _ in rec.steps if f["step"]]
    return {"steps": float(len(feats)), "seq_steps": float(sum(f["decode_seqs"] + f["chunks"] for f in feats)),
            "context_tokens": float(sum(f["decode_kv"] + f["chunk_kv"] for f in feats)),
            "input_tokens": float(sum(f["tokens"] for f in feats)),
            "finished": float(m["num_finished"]), "preemptions": float(m["num_preemptions"])}


def payload_seconds(totals: dict[str, float], layout: dict[str, float]) -> float:
    """Seconds that ``layout``'s per-sequence payload (:mod:`kvlab.paperlib.era_payload`'s fit: µs per
    sequence, µs per int) takes over a schedule whose sequences each sent their full context, at the
    speed it was measured: v0.2.6's ``seq_data`` (every token id) plus its block table. Pure."""
    ints = totals["context_tokens"] * (1 + 1 / era_payload.BLOCK) + totals["seq_steps"]
    return 1e-6 * (layout["seq_us"] * totals["seq_steps"] + layout["int_us"] * ints)


def derive(totals: dict[str, dict[str, float]], payload: dict[str, Any] | None = None,
           workers: int = WORKERS) -> dict[str, Any]:
    """The mode's Ray constants from both points (``payload``: :func:`kvlab.paperlib.era_payload.run`'s
    output; default the committed ``payload_fit.json``), the constant-per-sequence two-term form, and
    each one-term form fitted on the ShareGPT point with its error on the held-out point. Pure."""
    payload = payload if payload is not None else load_payload()
    v026, paper = (payload["layouts"][k]["fit"] for k in ("v0.2.6", "cacheflow_2023"))
    fit_name = next(k for k, p in POINTS.items() if p["role"] == "fit")
    held_name = next(k for k, p in POINTS.items() if p["role"] == "held_out")
    names = (fit_name, held_name)
    delta = {k: p["num_requests"] / p["before_req_s"] - p["num_requests"] / p["after_req_s"] for k, p in POINTS.items()}
    forms: dict[str, Any] = {}
    for form, unit in FORMS.items():
        w = delta[fit_name] / (workers * totals[fit_name][unit])
        h = POINTS[held_name]
        pred = h["num_requests"] / (h["num_requests"] / h["after_req_s"] + workers * w * totals[held_name][unit])
        forms[form] = {"us_per_worker": round(1e6 * w, 1), "held_out_before_req_s": pred,
                       "held_out_error_pct": 100 * (pred / h["before_req_s"] - 1)}
    w_step, w_seq = _two_term(totals, delta, names, workers, "seq_steps")
    constant_seq = {YAML_KEYS["w_step"]: round(1e6 * w_step, 1), YAML_KEYS["w_seq"]: round(1e6 * w_seq, 1)}

    def solve(t: dict[str, dict[str, float]], shape: dict[str, float]) -> tuple[float, float]:
        cols = {k: {**v, "payload_s": payload_seconds(v, shape)} for k, v in t.items()}
        return _two_term(cols, delta, names, workers, "payload_s")

    w_step, scale = solve(totals, v026)
    if w_step < 0 or scale < 0:
        raise ValueError(f"negative Ray cost (w_step {w_step:.3g} s, payload scale {scale:.3g}): the form "
                         "does not describe these points")
    two = {YAML_KEYS["w_step"]: round(1e6 * w_step, 1), YAML_KEYS["w_seq"]: round(scale * paper["seq_us"], 2),
           YAML_KEYS["w_int"]: round(scale * paper["int_us"], 4)}
    # How well two points pin the constants: each schedule total moved by +-5% (kvlab's ShareGPT is
    # synthetic; the PR tokenized with LLaMA's tokenizer), and v0.2.6's per-sequence object cost by
    # +-20% (the payload fit's residuals), one at a time.
    spread = [solve({k: {**v, u: v[u] * f} if k == name else v for k, v in totals.items()}, v026)
              for name in totals for u in ("steps", "seq_steps", "context_tokens") for f in (0.95, 1.05)]
    spread += [solve(totals, {**v026, "seq_us": v026["seq_us"] * f}) for f in (0.8, 1.2)]
    steps, scales = [w for w, _ in spread], [x for _, x in spread]
    ranges = {YAML_KEYS["w_step"]: [round(1e6 * min(steps), 1), round(1e6 * max(steps), 1)],
              "payload_scale": [round(min(scales), 3), round(max(scales), 3)]}
    return {"source": SOURCE, "workers": workers, "points": POINTS, "engine": ENGINE, "totals": totals,
            "delta_s": delta, "payload_fit": {"v0.2.6": v026, "cacheflow_2023": paper},
            "payload_scale": round(scale, 4), "forms": forms, "constant_seq": constant_seq,
            "two_term": two, "two_term_range_5pct": ranges}


def load_payload(path: Path = PAYLOAD_JSON) -> dict[str, Any]:
    """The committed payload measurement (``python -m kvlab.paperlib.era_payload``)."""
    return json.loads(path.read_text())


def _two_term(totals: dict[str, dict[str, float]], delta: dict[str, float], names: tuple[str, str],
              workers: int, unit: str) -> tuple[float, float]:
    """Both points: delta_p = N x (w_step x steps_p + x x unit_p), a 2x2 linear system in (w_step, x)."""
    (s1, n1), (s2, n2) = ((totals[k]["steps"], totals[k][unit]) for k in names)
    det = s1 * n2 - s2 * n1
    if det == 0:
        raise ValueError("the two points' schedules are proportional: they cannot separate w_step from the rest")
    d1, d2 = (delta[k] for k in names)
    return (d1 * n2 - d2 * n1) / det / workers, (s1 * d2 - s2 * d1) / det / workers


def era_throughput(overrides: list[str]) -> float:
    """Request throughput paper-era mode predicts for one workload under :data:`ENGINE` without its Ray
    terms: the PR's "after" engine, which had no Ray calls per step."""
    from kvlab.calibrate.runs import compose, run_workload

    off = [f"hardware.{key}=0" for key in YAML_KEYS.values()]
    return float(run_workload(compose([*ENGINE, *overrides, ERA, *off]))["metrics"]["request_throughput"])


def era_check(predict: Callable[[list[str]], float] = era_throughput) -> dict[str, Any]:
    """A check of the whole mode on the PR's runs, used by nothing: paper-era's predicted throughput
    without the Ray terms beside the "after" engine's. (No "before" check: the mode's Ray terms carry
    the paper engine's payload, not v0.2.6's.)"""
    out = {}
    for name, p in POINTS.items():
        pred, pub = predict(p["overrides"]), p["after_req_s"]
        out[f"{name}/after"] = {"predicted_req_s": pred, "published_req_s": pub, "error_pct": 100 * (pred / pub - 1)}
    return out


def run(root: Path, totals_of: Callable[[list[str]], dict[str, float]] = schedule_totals,
        predict: Callable[[list[str]], float] | None = era_throughput) -> dict[str, Any]:
    """Simulate both workloads' schedules, derive, and (``predict``) check the paper-era mode on
    the PR's runs; writes ``root/tp_fit.json``."""
    out = derive({k: totals_of(p["overrides"]) for k, p in POINTS.items()})
    if predict is not None:
        out["era_check"] = era_check(predict)
    root.mkdir(parents=True, exist_ok=True)
    (root / "tp_fit.json").write_text(json.dumps(out, indent=1))
    return out


def yaml_values(path: Path = ERA_YAML) -> dict[str, float]:
    """The worker terms as ``conf/experiment/era/paper2023.yaml`` sets them."""
    return yaml_hardware(YAML_KEYS.values(), path)


def main(argv: list[str] | None = None) -> int:
    """``python -m kvlab.paperlib.era_tp``: derive the multi-GPU terms and check the mode (about 20 s)."""
    import argparse

    from kvlab.paperlib.era import ROOT

    ap = argparse.ArgumentParser(prog="python -m kvlab.paperlib.era_tp", description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    out = run(ROOT)
    for form, f in out["forms"].items():
        print(f"one-term {form:9s} {f['us_per_worker']:9.1f} µs per worker (ShareGPT point); held-out "
              f"before {f['held_out_before_req_s']:.3f} req/s ({f['held_out_error_pct']:+.1f}%)")
    c = out["constant_seq"]
    print(f"two-term with a constant per-sequence cost (for the record): w_step {c[YAML_KEYS['w_step']]} µs, "
          f"w_seq {c[YAML_KEYS['w_seq']]} µs per worker")
    r = out["two_term_range_5pct"]
    print(f"measured payload shape (v0.2.6 sent every token id): w_step and payload scale "
          f"{out['payload_scale']} (ranges {r[YAML_KEYS['w_step']]} µs, {r['payload_scale']}); "
          "set in conf/experiment/era/paper2023.yaml, with the paper engine's payload:")
    for key, v in out["two_term"].items():
        print(f"  {key}: {v}")
    for key, c in out["era_check"].items():
        print(f"check (used by nothing): paper-era mode predicts {key} {c['predicted_req_s']:.2f} req/s, "
              f"published {c['published_req_s']:.2f} ({c['error_pct']:+.0f}%)")
    print(f"results: {ROOT / 'tp_fit.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
