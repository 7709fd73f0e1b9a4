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


def host_gaps(step_records: list[Any]) -> list[tuple[int, float]]:
    """(running sequences, host seconds) for every step after the first."""
    out = []
    for prev, cur in zip(step_records, step_records[1:]):
        gap = cur.time - prev.time - cur.duration_s
        out.append((int(cur.num_running_seqs), max(0.0, float(gap))))
    return out


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


def measure_host(executor: Any, base_overrides: list[str], num_requests: int) -> dict[str, Any]:
    """Run the calibration workload on ``executor``; returns the fit and its raw material."""
    from kvlab.calibrate.runs import compose, run_workload

    cfg = compose(base_overrides + CALIBRATION_WORKLOAD + [f"workload.num_requests={num_requests}"])
    res = run_workload(cfg, executor)
    gaps = host_gaps(res["engine"].step_records)
    fit = fit_host(gaps)
    vals = np.array([g for _, g in gaps]) if gaps else np.zeros(1)
    return {"fit": fit, "num_steps": len(gaps), "median_gap_s": float(np.median(vals)),
            "p90_gap_s": float(np.percentile(vals, 90)), "workload": CALIBRATION_WORKLOAD
            + [f"workload.num_requests={num_requests}"]}
