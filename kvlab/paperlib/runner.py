"""Run every figure's jobs in parallel (joblib, loky processes, as Hydra's joblib launcher) with
one progress bar, in two phases: (1) the latency sweeps (Figs. 12, 14/15, 16, 17); (2) the
fixed-rate runs whose rates depend on kvlab's own Fig. 12 capacities (Figs. 13, 18b, 19b).
Every run's row lands in ``<root>/points.csv``; capacities in ``<root>/capacity.csv``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from kvlab.paperlib import numbers
from kvlab.paperlib.capacity import capacities
from kvlab.paperlib.jobs import run_job
from kvlab.paperlib.specs import SWEEP_FIGURES, Job, load_spec, point_jobs, sweep_jobs

POINT_FIGURES = ("fig13", "fig18", "fig19")


def _execute(jobs: list[Job], root: Path, n_jobs: int, resume: bool, desc: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    par = Parallel(n_jobs=n_jobs, return_as="generator_unordered", backend="loky")
    with tqdm(total=len(jobs), desc=desc, unit="job", dynamic_ncols=True) as bar:
        for out in par(delayed(run_job)(j, str(root), resume) for j in jobs):
            rows.extend(out)
            bar.set_postfix_str(f"{out[0]['figure']}/{out[0]['panel']}/{out[0]['system']}", refresh=False)
            bar.update(1)
    return rows


def _threshold() -> float:
    return float(load_spec("fig12")["threshold_s_per_token"])


def run_all(root: Path, mode: str, n_jobs: int = 2, resume: bool = True,
            figures: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run the jobs of ``figures`` (default: all) and write points.csv / capacity.csv under ``root``.
    Returns {"points", "capacity", "seconds"}."""
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    wanted = figures or SWEEP_FIGURES + POINT_FIGURES
    phase1: list[Job] = []
    for fig in SWEEP_FIGURES:
        if fig in wanted:
            phase1 += sweep_jobs(fig, mode)
    phase1.sort(key=lambda j: (j.figure != "fig12", j.panel not in ("a", "b", "c")))  # long ones first
    rows = _execute(phase1, root, n_jobs, resume, f"paper {mode}: sweeps")
    pts = pd.DataFrame(rows)
    cap = capacities(pts[pts["figure"].isin(SWEEP_FIGURES + ("fig12_stability",))], _threshold()) \
        if len(pts) else pd.DataFrame(columns=["figure", "panel", "system", "capacity"])
    capmap = {(r.figure, r.panel, r.system): float(r.capacity) for r in cap.itertuples()}
    phase2: list[Job] = []
    for fig in POINT_FIGURES:
        if fig in wanted:
            phase2 += point_jobs(fig, mode, capmap, numbers.capacity_map("fig12"))
    phase2.sort(key=lambda j: int(j.tags.get("bs", 16)))  # block size 1 is the slowest
    rows += _execute(phase2, root, n_jobs, resume, f"paper {mode}: fixed-rate runs")
    pts = pd.DataFrame(rows)
    pts.to_csv(root / "points.csv", index=False)
    cap.to_csv(root / "capacity.csv", index=False)
    return {"points": pts, "capacity": cap, "seconds": time.perf_counter() - t0}
