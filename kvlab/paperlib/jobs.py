"""Executing one :class:`~kvlab.paperlib.specs.Job` (in a joblib worker process).

A run composes the Hydra config from the job's overrides, replays the workload through the
simulator (``kvlab.experiment.run_experiment``), keeps ``metrics.json`` / ``config.yaml`` / a
``row.json`` summary and deletes the bulky ``steps.csv`` / ``requests.csv``. Besides the whole-run
metrics, each row carries *steady-state* values averaged over the steps that end while requests
still arrive (``ss_*``): the paper's hour-long traces make the final drain negligible, ours would not.
A sweep places its rates around the saturated throughput (see :func:`run_job`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from kvlab.calibrate.runs import compose
from kvlab.paperlib.capacity import bracket
from kvlab.paperlib.specs import Job

NL = "normalized_latency_s_per_token"
KEEP = ("request_throughput", "output_throughput", NL, "mean_batched_requests", "kv_capacity_tokens",
        "mem_token_states_ratio", "mem_reservation_ratio", "mem_internal_frag_ratio",
        "mem_external_frag_ratio", "num_preemptions", "swapped_bytes", "prefix_hit_rate",
        "sharing_saved_ratio", "num_requests", "num_finished", "duration_s", "mean_ttft_ms", "mean_tpot_ms")


def steady_state(engine: Any) -> dict[str, float]:
    """Time-weighted means over the steps ending between the first and the last arrival."""
    reqs = engine.request_records
    if not reqs:
        return {}
    t0, t1 = min(r.arrival_time for r in reqs), max(r.arrival_time for r in reqs)
    steps = [s for s in engine.step_records if t0 < s.time <= t1 and s.total_slots > 0]
    if not steps:
        return {}
    w = np.array([s.duration_s for s in steps], dtype=float)
    w = w if w.sum() > 0 else np.ones_like(w)

    def avg(vals: list[float]) -> float:
        return float(np.dot(np.asarray(vals, dtype=float), w) / w.sum())

    out = {f"ss_mem_{c}_ratio": avg([getattr(s, c) / s.total_slots for s in steps])
           for c in ("token_states", "reservation", "internal_frag", "external_frag")}
    out["ss_mean_batched_requests"] = float(np.mean([s.num_running for s in steps]))
    shared = [(1.0 - s.physical_blocks / s.logical_blocks, s.duration_s)
              for s in steps if s.logical_blocks > 0]
    if shared:
        v, ww = np.array(shared).T
        out["ss_sharing_saved_ratio"] = float(np.dot(v, ww) / ww.sum()) if ww.sum() > 0 else float(v.mean())
    return out


def saturated_throughput(engine: Any) -> float:
    """Completions per second between the 10th and 90th percentile finish times of a run whose
    requests all arrived at t=0: the steady service rate, without the start-up and the drain."""
    t = np.sort([r.finish_time for r in engine.request_records if r.finish_time is not None])
    if len(t) < 10:
        return float(len(t) / t[-1]) if len(t) and t[-1] > 0 else math.nan
    i, j = int(0.1 * len(t)), int(0.9 * len(t))
    return float((j - i) / (t[j] - t[i])) if t[j] > t[i] else math.nan


def run_point(job: Job, rate: float | None, root: Path, resume: bool = True,
              cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run of ``job`` at ``rate`` req/s (None = every request at t=0, the saturation run);
    returns its summary row (cached in ``row.json``). ``cfg``: the job's composed config."""
    from kvlab.experiment import run_experiment

    trace = (job.sweep or {}).get("trace") if rate is not None else None
    name = "saturation" if rate is None else f"rate-{rate:g}"
    if trace:  # a rate run on a trace of a fixed duration (the paper's), not of num_requests
        name += f"-{trace['duration_s']:g}s-warmup{trace.get('warmup_s', 0.0):g}s"
    out = root / "runs" / job.key / name
    row_path = out / "row.json"
    if resume and row_path.exists():
        return json.loads(row_path.read_text())
    cfg = copy.deepcopy(cfg or compose(job.overrides + ["show_progress=false"]))
    cfg["workload"]["rate"] = rate
    if trace:
        cfg["workload"].update(num_requests=None, duration_s=float(trace["duration_s"]),
                               warmup_s=float(trace.get("warmup_s", 0.0)))
    t = time.perf_counter()
    res = run_experiment(cfg, out)
    m = res["metrics"]
    row: dict[str, Any] = {"figure": job.figure, "panel": job.panel, "system": job.system,
                           "rate": math.inf if rate is None else rate, "saturation": rate is None,
                           **{f"tag_{k}": v for k, v in job.tags.items()},
                           **{k: m.get(k) for k in KEEP}, **steady_state(res["engine"]),
                           "block_size": cfg["allocator"].get("block_size"),
                           "model": cfg["model"]["name"], "hardware": cfg["hardware"]["name"],
                           "workload": cfg["workload"]["name"], "wall_s": time.perf_counter() - t,
                           "overrides": " ".join(job.overrides)}
    if rate is None:
        row["sat_throughput"] = saturated_throughput(res["engine"])
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    for big in ("steps.csv", "requests.csv"):
        (out / big).unlink(missing_ok=True)
    row_path.write_text(json.dumps(row, indent=1))
    return row


def _nl(row: dict[str, Any]) -> float:
    v = row.get(NL)
    return math.inf if v is None else float(v)


def run_job(job: Job, root: str, resume: bool = True) -> list[dict[str, Any]]:
    """All runs of ``job``: its fixed rate(s), or a sweep. A sweep first runs the trace with every
    request at t=0 (its steady completion rate X is the saturated capacity), then at
    ``fractions`` x X, and at ``extend`` x X if no point crossed the threshold yet; then, from the
    last point, at each of ``descend`` x X in turn while it is over the threshold (a crossing below
    X), or of ``ascend`` x X while it is under (a crossing above it). ``trace`` (``duration_s``,
    ``warmup_s``) runs every rate point on a trace of that duration instead of ``num_requests``;
    ``refine`` bisects the bracketing pair of rates that many times (a linear interpolation between
    points 0.1 X apart reads a hockey-stick curve's crossing low)."""
    base = Path(root)
    cfg = compose(job.overrides + ["show_progress=false"])
    if job.sweep is None:
        return [run_point(job, r, base, resume, cfg) for r in job.rates]
    sat = run_point(job, None, base, resume, cfg)
    x = float(sat.get("sat_throughput") or sat.get("request_throughput") or 0.0)
    rows = [sat]
    if x <= 0:
        return rows
    for f in job.sweep["fractions"]:
        rows.append(run_point(job, round(f * x, 4), base, resume, cfg))
    ext = job.sweep.get("extend")
    if ext and all(_nl(r) <= job.threshold for r in rows[1:]):
        rows.append(run_point(job, round(float(ext) * x, 4), base, resume, cfg))
    over = _nl(rows[-1]) > job.threshold
    for f in job.sweep.get("descend" if over else "ascend") or ():  # walk until the threshold is crossed
        rows.append(run_point(job, round(f * x, 4), base, resume, cfg))
        if (_nl(rows[-1]) > job.threshold) != over:
            break
    for _ in range(int(job.sweep.get("refine") or 0)):  # bisect the bracketing pair of rates
        _, pair = bracket([r["rate"] for r in rows[1:]], [_nl(r) for r in rows[1:]], job.threshold)
        if pair is None:
            break
        (r0, _), (r1, _) = pair
        mid = round((r0 + r1) / 2, 4)
        if mid in (r0, r1):
            break
        rows.append(run_point(job, mid, base, resume, cfg))
    return rows
