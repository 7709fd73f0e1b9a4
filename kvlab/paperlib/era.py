"""Paper-era mode: the 2023 engine's host overheads, fitted on ONE published point, then Fig. 12 predicted.

The datasheet roofline simulator has no serving-engine overhead, so its absolute latencies are
about half the paper's and its capacities 2-8x higher. Paper-era mode adds two explicit host terms
to every step (``kvlab.executor.cost_model.CostModel.step_time``)::

    t_host = engine_step_overhead x 1  +  engine_per_seq x (sequences in the step)

* ``engine_per_seq`` is NOT fitted: kvlab's own Python engine's per-sequence host cost, measured by
  ``python -m kvlab.calibrate`` (the profile's ``host_overhead.seqs``), stands in for the 2023
  engine's per-sequence Python work (block tables, sampler and detokenizer bookkeeping).
* ``engine_step_overhead`` is fitted on ONE point: Fig. 12(a), vLLM at 1.0 req/s (its lowest
  plotted rate), mean normalized latency 0.04 s/token (the midpoint of the digitized 0.03-0.05).

Then every Fig. 12 panel's capacity is predicted with no further tuning -- as the saturated
throughput X (see :data:`ERA_FRACTIONS`) -- and compared with the paper's digitized 0.5 s/token
crossings. The constants live
in ``conf/experiment/era/paper2023.yaml``; :func:`fit` reproduces the fitted one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kvlab.paperlib import numbers
from kvlab.paperlib.capacity import capacities
from kvlab.paperlib.specs import Job, sweep_jobs

ERA = "+experiment/era=paper2023"
THRESHOLD = 0.5  # s/token: where the paper's digitized capacities were read (vllm-paper.md §Fig 12)
FIT_POINT = {"figure": "fig12", "panel": "a", "system": "vllm", "rate": 1.0, "normalized_latency": 0.04,
             "source": "vllm-paper.md Fig 12: low-load normalized latency 0.03-0.05 s/token (13B) [D]; "
                       "vLLM's lowest plotted rate in (a) is 1.0 req/s [D]"}
KEY = "hardware.engine_step_overhead_us"
# Rates per sweep, as fractions of the saturated throughput X. None by default: each (panel, system)
# runs only its saturation trace, and X is the predicted capacity. On the paper's hour-long traces
# the 0.5 s/token crossing converges to X (past X the queue grows without bound; see the report's
# "Trace length"), and one run per job keeps the whole mode at ~15 min on 2 shared cores.
ERA_FRACTIONS: tuple[float, ...] = ()


def _nl_at(overhead_us: float, n: int) -> float:
    from kvlab.calibrate.runs import run_workload
    from kvlab.paperlib.jobs import compose

    cfg = compose(["+experiment=paper_fig12", "+experiment/system=vllm", ERA, f"workload.num_requests={n}",
                   f"workload.rate={FIT_POINT['rate']}", f"{KEY}={overhead_us}"])
    return float(run_workload(cfg)["metrics"]["normalized_latency_s_per_token"])


def fit(root: Path, num_requests: int = 500, tol: float = 0.0005, log: Any = print) -> dict[str, Any]:
    """Bisect ``engine_step_overhead_us`` until the fit point's normalized latency is within
    ``tol`` s/token of the target (it rises monotonically with the overhead); writes fit.json."""
    target = float(FIT_POINT["normalized_latency"])
    lo, hi = 0.0, 60_000.0
    tried = []
    mid = 0.0
    for _ in range(14):
        mid = (lo + hi) / 2
        v = _nl_at(mid, num_requests)
        tried.append({"engine_step_overhead_us": mid, "normalized_latency": v})
        log(f"  overhead {mid / 1e3:.2f} ms -> {v:.4f} s/token")
        if abs(v - target) <= tol:
            break
        lo, hi = (mid, hi) if v < target else (lo, mid)
    out = {"fit_point": FIT_POINT, "num_requests": num_requests, "engine_step_overhead_us": round(mid),
           "tried": tried}
    root.mkdir(parents=True, exist_ok=True)
    (root / "fit.json").write_text(json.dumps(out, indent=1))
    return out


def jobs() -> list[Job]:
    """Fig. 12's full-mode sweeps with the era overrides and the paper's 0.5 s/token threshold."""
    out = []
    for j in sweep_jobs("fig12", "full"):
        if j.figure != "fig12":
            continue
        j.overrides = [*j.overrides, ERA]
        j.threshold = THRESHOLD
        j.sweep = {**(j.sweep or {}), "fractions": list(ERA_FRACTIONS), "extend": None}
        out.append(j)
    return out


def capacity_table(points: pd.DataFrame, roofline: pd.DataFrame | None) -> pd.DataFrame:
    """Paper-era capacity per (panel, system) beside the roofline capacity and the paper's."""
    cap = capacities(points[points["figure"] == "fig12"], THRESHOLD)
    cap["capacity"] = cap["saturated_throughput"]  # the prediction: X (see ERA_FRACTIONS)
    cap["bound"] = ""
    paper = numbers.capacity_map("fig12")
    roof = {} if roofline is None else {(r.panel, r.system): (r.capacity, r.bound)
                                       for r in roofline[roofline["figure"] == "fig12"].itertuples()}
    rows = []
    for r in cap.itertuples():
        p = paper.get((r.panel, r.system), math.nan)
        rc, rb = roof.get((r.panel, r.system), (math.nan, ""))
        fitted = r.panel == FIT_POINT["panel"] and r.system == FIT_POINT["system"]
        rows.append({"panel": r.panel, "system": r.system,
                     "roofline_capacity": rc, "roofline_bound": rb if isinstance(rb, str) else "",
                     "era_capacity": r.capacity, "era_bound": r.bound, "paper": p,
                     "era_error_pct": 100 * (r.capacity / p - 1) if p == p and not r.bound else math.nan,
                     "note": "fit point's panel/system (its latency, not its capacity, was fitted)" if fitted else ""})
    return pd.DataFrame(rows)


ROOT = Path(__file__).resolve().parents[2] / "results" / "paper" / "era2023"


def run(root: Path = ROOT, n_jobs: int = 2, resume: bool = True) -> pd.DataFrame:
    """Run the era sweeps; writes points.csv and fig12_capacity.csv under ``root``."""
    from kvlab.paperlib.runner import _execute

    rows = _execute(jobs(), root, n_jobs, resume, "paper-era fig12 sweeps")
    pts = pd.DataFrame(rows)
    pts.to_csv(root / "points.csv", index=False)
    full = root.parent / "full" / "capacity.csv"
    table = capacity_table(pts, pd.read_csv(full, dtype={"bound": str}).fillna({"bound": ""})
                           if full.exists() else None)
    table.to_csv(root / "fig12_capacity.csv", index=False, float_format="%.4g")
    return table


def section(root: Path = ROOT) -> list[str]:
    """The paper report's Markdown section for this mode ([] if it has not been run)."""
    path, fitp = root / "fig12_capacity.csv", root / "fit.json"
    if not path.exists():
        return []
    t = pd.read_csv(path, dtype={"era_bound": str, "roofline_bound": str}).fillna(
        {"era_bound": "", "roofline_bound": "", "note": ""})
    order = {s: i for i, s in enumerate(("ft", "orca_max", "orca_pow2", "orca_oracle", "vllm"))}
    t = t.sort_values(["panel", "system"], key=lambda c: c.map(order) if c.name == "system" else c)
    fitted = json.loads(fitp.read_text())["engine_step_overhead_us"] if fitp.exists() else float("nan")
    show = pd.DataFrame({
        "panel": t["panel"], "system": t["system"],
        "roofline capacity (0.25)": [f"{b}{v:.3g}" for v, b in zip(t["roofline_capacity"], t["roofline_bound"])],
        "paper-era capacity (X)": [f"{b}{v:.3g}" for v, b in zip(t["era_capacity"], t["era_bound"])],
        "paper [D] (0.5)": t["paper"],
        "paper-era error": [f"{e:+.0f}%" if e == e else "n/a" for e in t["era_error_pct"]]})
    lines = ["| " + " | ".join(show.columns) + " |", "|" + " --- |" * len(show.columns)]
    lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in show.itertuples(index=False)]
    err = t["era_error_pct"].dropna()
    within = int((err.abs() <= 25).sum())
    misses = ", ".join(f"({r.panel}) {r.system} {r.era_error_pct:+.0f}%" for r in t.itertuples()
                       if r.era_error_pct == r.era_error_pct and abs(r.era_error_pct) > 25)
    a = t[t["panel"] == "a"]["era_error_pct"].abs()
    rest = t[t["panel"] != "a"]["era_error_pct"]
    return ["### Paper-era mode: the 2023 engine's host overheads, one fitted point", "",
            "The tables above are the **datasheet roofline** mode (the default). In **paper-era** mode "
            "(`+experiment/era=paper2023`, `kvlab/paperlib/era.py`, docs/simulator.md) every step also pays "
            f"`engine_step_overhead` = **{fitted / 1e3:.2f} ms**, FITTED on ONE published point — Fig. 12(a), "
            "vLLM at 1.0 req/s, normalized latency 0.04 s/token (the digitized low-load 0.03-0.05) — plus "
            "`engine_per_seq` = 25 µs per sequence, NOT fitted (kvlab's own engine host cost per sequence, "
            "measured by `python -m kvlab.calibrate`). Every capacity below is then a prediction: the saturated "
            "throughput X of the panel's trace with every request at t=0 (on the paper's hour-long traces the "
            "0.5 s/token crossing converges to X, since past X the queue grows without bound; see *Trace "
            "length*). The roofline column is the mode above (0.25 s/token crossing of a short trace). "
            "Reproduce: `python -m kvlab.paperlib.era` (results/paper/era2023/).", "",
            *lines, "",
            f"Paper-era capacities within 25% of the paper's digitized value: **{within} of {len(err)}** "
            f"(median |error| {err.abs().median():.0f}%)." + (f" Misses: {misses}." if misses else ""), "",
            f"Panel (a) — one GPU, ShareGPT, the panel of the fitted latency point — lands within "
            f"{a.max():.0f}% for all five systems, so one per-step term explains the 13B engine. It does not "
            f"transfer: the other panels are over-predicted (median {rest.median():+.0f}%), most on multiple "
            "GPUs (b, c, e, f) and on Alpaca (d, e, f). The 2023 engine's overheads evidently grew with the "
            "tensor-parallel degree (per-step work on every worker) and with the batch (Alpaca batches are "
            "~100+ sequences), which one point on one GPU cannot fit; adding such terms would need more "
            "published points, i.e. fitting to the figures being reproduced, which this mode refuses. The "
            "issue's target (every panel within 25%) is NOT met.", ""]


def main(argv: list[str] | None = None) -> int:
    """``python -m kvlab.paperlib.era [--fit] [--jobs N]``: refit the one constant, or run Fig. 12."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m kvlab.paperlib.era", description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit engine_step_overhead_us on the one named point")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs")
    args = ap.parse_args(argv)
    if args.fit:
        out = fit(ROOT)
        print(f"engine_step_overhead_us: {out['engine_step_overhead_us']} (fit.json in {ROOT}); "
              "copy it into conf/experiment/era/paper2023.yaml")
        return 0
    table = run(ROOT, args.jobs, not args.fresh)
    print(table.to_string(index=False))
    print(f"results: {ROOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
