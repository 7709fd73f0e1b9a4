"""The engine's host overhead: wall time per step spent outside ``execute()``.

On the real executor the engine's clock is wall time, so every step also pays for scheduling,
building the step input, committing samples and writing records. The simulator advances its
virtual clock by the modelled duration only, so the calibrated model adds ``h_step + h_seq x
seqs`` per step. We measure it on a short offline run of a *calibration* workload (its own seed
and lengths, never used for validation): for consecutive steps, ``gap = time_i - time_(i-1) -
duration_i``, where ``time`` is the wall clock after ``execute`` and ``duration`` the executor's own
timing. Gaps are grouped by the number of running sequences, each group's median taken, and a
non-negative line fitted through the medians, weighted by group size (robust to the spikes that
other processes cause on a shared machine).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from kvlab.calibrate.fit import nnls

CALIBRATION_WORKLOAD = ["workload=uniform", "workload.rate=null", "workload.seed=9001",
                        "workload.prompt_len_min=8", "workload.prompt_len_max=48",
                        "workload.output_len_min=8", "workload.output_len_max=40"]
# A second calibration run with arrivals (its own seed, lengths and rate; never validated on): its
# real steps — one prompt at a time beside running decodes, as a server sees them — join the grid
# in the step-time fit (kvlab.calibrate.calibrate), because prefill steps in real runs measured
# 18-32% faster than grid steps of the same shape (decode steps agreed within 2%).
CALIBRATION_ARRIVALS = ["workload=uniform", "workload.rate=1.0", "workload.seed=9002",
                        "workload.prompt_len_min=16", "workload.prompt_len_max=256",
                        "workload.output_len_min=8", "workload.output_len_max=48"]


def host_gaps(step_records: list[Any], requests: list[Any] | None = None) -> list[tuple[int, float]]:
    """(running sequences, host seconds) for every step after the first. With ``requests`` (the
    run's ``RequestRecord``s) a gap after which the engine had nothing to do is left out: with
    arrivals, such a gap is mostly the engine's idle wait for the next request, not host work (a
    0.5x-saturation run's mean gap read 8.5 ms with them against 0.3 ms of host work)."""
    out = []
    for prev, cur in zip(step_records, step_records[1:]):
        if requests is not None and not _busy_at(prev.time, requests):
            continue
        gap = cur.time - prev.time - cur.duration_s
        out.append((int(cur.num_running_seqs), max(0.0, float(gap))))
    return out


def _busy_at(t: float, requests: list[Any], eps: float = 1e-9) -> bool:
    """Whether some request had arrived by clock ``t`` (a step's end) and was not finished then."""
    return any(r.arrival_time <= t + eps and (r.finish_time is None or r.finish_time > t + eps)
               for r in requests)


def fit_host(gaps: list[tuple[int, float]]) -> dict[str, float]:
    """{"step": s, "seqs": s per sequence} through the per-group medians (module docstring)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for n, g in gaps:
        groups[n].append(g)
    if not groups:
        return {"step": 0.0, "seqs": 0.0}
    ns = np.array(sorted(groups), dtype=float)
    med = np.array([np.median(groups[int(n)]) for n in ns])
    w = np.sqrt(np.array([len(groups[int(n)]) for n in ns], dtype=float))
    a = np.stack([np.ones_like(ns), ns], axis=1) * w[:, None]
    c = nnls(a, med * w)
    return {"step": float(c[0]), "seqs": float(c[1])}


def measure_host(executor: Any, base_overrides: list[str], num_requests: int,
                 block_rows: int = 0) -> dict[str, Any]:
    """Run the calibration workload on ``executor``; returns the fit and its raw material, with
    ``steps``: every ``execute()``'s (features, seconds)."""
    from kvlab.calibrate.runs import StepRecorder, compose, run_workload

    cfg = compose(base_overrides + CALIBRATION_WORKLOAD + [f"workload.num_requests={num_requests}"])
    rec = StepRecorder(executor, block_rows)
    res = run_workload(cfg, rec)
    gaps = host_gaps(res["engine"].step_records)
    fit = fit_host(gaps)
    vals = np.array([g for _, g in gaps]) if gaps else np.zeros(1)
    return {"fit": fit, "num_steps": len(gaps), "steps": rec.steps, "median_gap_s": float(np.median(vals)),
            "p90_gap_s": float(np.percentile(vals, 90)), "workload": CALIBRATION_WORKLOAD
            + [f"workload.num_requests={num_requests}"]}


def record_arrival_steps(executor: Any, base_overrides: list[str], num_requests: int,
                         block_rows: int = 0) -> dict[str, Any]:
    """Run :data:`CALIBRATION_ARRIVALS` on ``executor`` and return its real steps' (features, seconds)."""
    from kvlab.calibrate.runs import StepRecorder, compose, run_workload

    ov = CALIBRATION_ARRIVALS + [f"workload.num_requests={num_requests}"]
    rec = StepRecorder(executor, block_rows)
    run_workload(compose(base_overrides + ov), rec)
    return {"steps": rec.steps, "workload": ov}
