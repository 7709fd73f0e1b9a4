"""Paper-era mode: the 2023 engine's host overheads, one constant fitted on ONE published point, then Fig. 12 predicted.

The datasheet roofline simulator has no serving-engine overhead, so its absolute latencies are
about half the paper's and its capacities 2-8x higher. Paper-era mode adds the host work of a
Python serving engine to every step (``kvlab.executor.cost_model.CostModel.step_time``)::

    t_host(n) = k x (host_step + host_seq x n) + N x (w_step + w_seq x n + w_int x i)
                n = sequences in the step, i = ints its worker calls carry,
                N = tensor-parallel workers (that term only for N >= 2)

``host_step`` and ``host_seq`` are kvlab's own engine's host costs MEASURED by
``python -m kvlab.calibrate`` (the committed profile's ``host_overhead``); ``k`` is FITTED on ONE
point of the paper, Fig. 12(a)'s vLLM at 1.0 req/s (:data:`kvlab.paperlib.era_fit.FIT_POINT`, fit
in :mod:`kvlab.paperlib.era_fit`); ``w_step``, ``w_seq`` and ``w_int``, the 2023 engine's Ray control
plane, are DERIVED outside the paper from vLLM PR #2221's published throughputs and the two engines'
measured payloads (:mod:`kvlab.paperlib.era_tp`, :mod:`kvlab.paperlib.era_payload`);
and on N >= 2 GPUs each all-reduce costs the engine's NCCL path ``a`` more than the datasheet's
link latency, DERIVED from vLLM PR #2192's published latencies (:mod:`kvlab.paperlib.era_allreduce`).
Then every Fig. 12 panel's capacity is predicted with no further
tuning -- as the 0.5 s/token crossing on a trace like the paper's, walked from the saturated
throughput X and bisected (see :data:`CHECK_FRACTION`; the previous fixed-count reading is kept
beside it, :data:`READINGS`) -- and compared with the paper's digitized 0.5 s/token crossings. The
resulting constants live in ``conf/experiment/era/paper2023.yaml``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kvlab.paperlib import numbers
from kvlab.paperlib.capacity import capacities
from kvlab.paperlib.era_fit import ERA, FIT_POINT, REPO, fit
from kvlab.paperlib.era_traces import parse_traces, with_traces
from kvlab.paperlib.specs import Job, sweep_jobs

THRESHOLD = 0.5  # s/token: where the paper's digitized capacities were read (vllm-paper.md §Fig 12)
# The prediction is read as the paper read its curves: the rate where the mean normalized latency
# crosses THRESHOLD, on a trace like the paper's -- Poisson arrivals for one hour, 15 minutes on
# OPT-175B, the first 60 s dropped from the metrics (vllm-paper.md 2.3, 2.4; TRACE_S, WARMUP_S). The
# saturated throughput X (every request at t=0) only anchors the sweep: one check point at
# CHECK_FRACTION x X, then, if it is under the threshold, ASCEND_FRACTIONS x X until a point is over
# (past X the queue grows, but on a finite trace the latency reaches 0.5 s/token only once enough
# backlog has built up, sooner on an hour than on 15 minutes); if it is already over (request-level
# batching, whose requests wait for a whole batch of others to finish before they start),
# DESCEND_FRACTIONS x X until a point is back under. The capacity is the interpolated crossing.
CHECK_FRACTION = 0.9
ASCEND_FRACTIONS: tuple[float, ...] = (1.0, 1.1, 1.25, 1.5, 2.0)
DESCEND_FRACTIONS: tuple[float, ...] = (0.7, 0.5, 0.3, 0.2, 0.1)
TRACE_S = 3600.0  # one hour, and 15 minutes on the models below
SHORT_TRACE_S = {"opt-175b": 900.0}
WARMUP_S = 60.0
REFINE = 2  # bisections of the bracketing pair: the crossing to 1/40 of the walk's 0.1 X step
# The previous reading, kept beside it (and the diagnostics' baseline, era_sensitivity): every rate run
# on the full mode's fixed-count trace (500 ShareGPT / 1,200 Alpaca requests), X unless the check point
# is already over the threshold, then the walk down. "paper_trace" is the prediction.
READINGS = ("paper_trace", "fixed")


def jobs(panels: str = "abcdef", num_requests: int | None = None, reading: str = "paper_trace") -> list[Job]:
    """Fig. 12's full-mode sweeps of ``panels`` with the era overrides, the paper's 0.5 s/token
    threshold and its trace durations (``num_requests``: every run on a trace of that many requests
    instead, for tests)."""
    out = []
    for j in sweep_jobs("fig12", "full"):
        if j.figure != "fig12" or j.panel not in panels:
            continue
        j.overrides = [*j.overrides, ERA, *([f"workload.num_requests={num_requests}"] if num_requests else [])]
        j.threshold = THRESHOLD
        j.sweep = {**(j.sweep or {}), "fractions": [CHECK_FRACTION], "extend": None,
                   "descend": list(DESCEND_FRACTIONS)}
        if reading == "paper_trace":
            j.sweep.update(ascend=list(ASCEND_FRACTIONS), refine=REFINE,
                           trace=None if num_requests else {"duration_s": _trace_s(j), "warmup_s": WARMUP_S})
        elif reading != "fixed":
            raise ValueError(f"reading={reading!r}: choose one of {READINGS}")
        out.append(j)
    return out


def _trace_s(job: Job) -> float:
    """The paper's trace duration for ``job``'s model (its ``model=`` override)."""
    return SHORT_TRACE_S.get(job.override("model"), TRACE_S)


def capacity_table(points: pd.DataFrame, roofline: pd.DataFrame | None, reading: str = "paper_trace") -> pd.DataFrame:
    """Paper-era capacity per (panel, system) beside the roofline capacity and the paper's."""
    cap = capacities(points[points["figure"] == "fig12"], THRESHOLD)
    # The prediction (see CHECK_FRACTION): the crossing ("<": over the threshold even at the lowest
    # rate run; ">": under it at the highest). A table holding X alone ("no runs") reads X, and so
    # does the "fixed" reading wherever no run below X is over the threshold.
    only_x = cap["bound"].isin(["no runs", ">"] if reading == "fixed" else ["no runs"])
    cap["capacity"] = cap["saturated_throughput"].where(only_x, cap["capacity"])
    cap["bound"] = cap["bound"].where(~only_x, "")
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
                     "era_capacity": r.capacity, "era_bound": r.bound, "saturated_x": r.saturated_throughput,
                     "capacity_over_x": r.capacity / r.saturated_throughput, "paper": p,
                     "era_error_pct": 100 * (r.capacity / p - 1) if p == p else math.nan,  # a "<" bound counts too
                     "note": "fit point's panel/system (its latency, not its capacity, was fitted)" if fitted else ""})
    return pd.DataFrame(rows)


ROOT = REPO / "results" / "paper" / "era2023"
TRACES_ROOT = REPO / "results" / "paper" / "era2023-traces"  # runs on user-supplied dataset files (--trace)


def run(root: Path = ROOT, n_jobs: int = 2, resume: bool = True, panels: str = "abcdef",
        num_requests: int | None = None, readings: tuple[str, ...] = ("fixed", "paper_trace"),
        traces: dict[str, str] | None = None) -> pd.DataFrame:
    """Run the era sweeps of ``panels`` in both readings; writes points.csv and fig12_capacity.csv (the
    prediction, on the paper's traces) and points_fixed.csv and fig12_capacity_fixed.csv (the fixed-count
    reading) under ``root``; returns the last of ``readings``' table. ``traces``: a trace file per
    dataset in place of its synthetic lengths (:mod:`kvlab.paperlib.era_traces`)."""
    from kvlab.paperlib.runner import _execute

    full = root.parent / "full" / "capacity.csv"
    roof = pd.read_csv(full, dtype={"bound": str}).fillna({"bound": ""}) if full.exists() else None
    tables = {}
    for reading in readings:  # by default the fixed-count runs first: they are the quick ones
        todo = with_traces(jobs(panels, num_requests, reading), traces or {})
        rows = pd.DataFrame(_execute(todo, root, n_jobs, resume, f"paper-era fig12 sweeps ({reading})"))
        suffix = "" if reading == "paper_trace" else "_fixed"
        rows.to_csv(root / f"points{suffix}.csv", index=False)
        tables[reading] = capacity_table(rows, roof, reading)
        tables[reading].to_csv(root / f"fig12_capacity{suffix}.csv", index=False, float_format="%.4g")
    return tables[readings[-1]]


def _read_json(path: Path) -> dict[str, Any]:
    """A derivation's json, or {} where it has not been run (the report then prints nan)."""
    return json.loads(path.read_text()) if path.exists() else {}


def section(root: Path = ROOT) -> list[str]:
    """The paper report's Markdown section for this mode ([] if it has not been run)."""
    path, fitp = root / "fig12_capacity.csv", root / "fit.json"
    if not path.exists():
        return []
    t = pd.read_csv(path, dtype={"era_bound": str, "roofline_bound": str}).fillna(
        {"era_bound": "", "roofline_bound": "", "note": ""})
    order = {s: i for i, s in enumerate(("ft", "orca_max", "orca_pow2", "orca_oracle", "vllm"))}
    t = t.sort_values(["panel", "system"], key=lambda c: c.map(order) if c.name == "system" else c)
    fitted = _read_json(fitp)
    fixed_path = root / "fig12_capacity_fixed.csv"
    fixed = (pd.read_csv(fixed_path).set_index(["panel", "system"])["era_error_pct"] if fixed_path.exists()
             else pd.Series(dtype=float))
    fixed_err = [fixed.get((r.panel, r.system), math.nan) for r in t.itertuples()]
    fixed_within = sum(1 for e in fixed_err if e == e and abs(e) <= 25)
    show = pd.DataFrame({
        "panel": t["panel"], "system": t["system"],
        "roofline capacity (0.25)": [f"{b}{v:.3g}" for v, b in zip(t["roofline_capacity"], t["roofline_bound"])],
        "paper-era capacity": [f"{b}{v:.3g}" for v, b in zip(t["era_capacity"], t["era_bound"])],
        "capacity / X": [f"{v:.2f}" for v in t["capacity_over_x"]],
        "paper [D] (0.5)": t["paper"],
        "paper-era error": [f"{e:+.0f}%" if e == e else "n/a" for e in t["era_error_pct"]],
        "fixed-count reading's error": [f"{e:+.0f}%" if e == e else "n/a" for e in fixed_err]})
    lines = ["| " + " | ".join(show.columns) + " |", "|" + " --- |" * len(show.columns)]
    lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in show.itertuples(index=False)]
    err = t["era_error_pct"].dropna()
    within = int((err.abs() <= 25).sum())
    misses = ", ".join(f"({r.panel}) {r.system} {r.era_error_pct:+.0f}%" for r in t.itertuples()
                       if r.era_error_pct == r.era_error_pct and abs(r.era_error_pct) > 25)
    per_panel = "; ".join(f"({p}) {int((g['era_error_pct'].abs() <= 25).sum())}/{len(g)}"
                          for p, g in t.groupby("panel"))
    base = fitted.get("host_base", {})
    one_gpu = int((t[t["panel"].isin(["a", "d"])]["era_error_pct"].abs() <= 25).sum())
    tp_within = int((t[t["panel"].isin(list("bcef"))]["era_error_pct"].abs() <= 25).sum())
    ft_tp = ", ".join(f"({r.panel}) {r.era_error_pct:+.0f}%" for r in t.itertuples()
                      if r.system == "ft" and r.panel in "bcef" and abs(r.era_error_pct) > 25) or "none"
    ft = t[t["system"] == "ft"]
    ft_rows = ", ".join(f"({r.panel}) {r.era_error_pct:+.0f}% at {r.capacity_over_x:.2f} X" for r in ft.itertuples())
    others = t[t["system"] != "ft"]["capacity_over_x"]
    tp, ar = _read_json(root / "tp_fit.json"), _read_json(root / "allreduce_fit.json")
    ar_rows = list(ar.get("per_call_saving_us", {}).values()) or [math.nan, math.nan]
    two = tp.get("two_term", {})
    return ["### Paper-era mode: the 2023 engine's host overheads, one fitted constant", "",
            "The tables above are the **datasheet roofline** mode (the default). In **paper-era** mode "
            "(`+experiment/era=paper2023`, `kvlab/paperlib/era.py`, docs/simulator.md) every step also pays the "
            "host work of a Python serving engine, `t_host(n) = k x (host_step + host_seq x n) + N x (w_step + "
            "w_seq x n + w_int x i)` for n sequences in the step, i ints in its worker calls (input tokens and "
            "block-table entries) and N tensor-parallel workers (the N term only when N >= 2), "
            "and on N >= 2 GPUs each of a step's 2 x layers all-reduces costs `a` more than the datasheet's link "
            "latency. "
            f"`host_step` = {base.get('step_us', math.nan):.0f} µs and `host_seq` = "
            f"{base.get('seq_us', math.nan):.1f} µs are NOT fitted: kvlab's own engine's host costs, measured by "
            f"`python -m kvlab.calibrate` (`{base.get('profile', '?')}`). `k` = **{fitted.get('k', math.nan):.2f}** is "
            "FITTED on ONE published point of the paper — Fig. 12(a), vLLM at 1.0 req/s, normalized latency "
            "0.04 s/token (the digitized low-load 0.03-0.05) — giving "
            f"{fitted.get('engine_step_overhead_us', math.nan) / 1e3:.2f} ms per step + "
            f"{fitted.get('engine_per_seq_us', math.nan):.0f} µs per sequence. `w_step` = "
            f"**{two.get('engine_per_worker_step_us', math.nan) / 1e3:.2f} ms** and `w_seq` = "
            f"**{two.get('engine_per_worker_seq_us', math.nan):.2f} µs** per worker (plus "
            f"{1e3 * two.get('engine_per_worker_int_us', math.nan):.1f} ns per int of the step's input tokens and "
            "block tables), the 2023 engine's Ray control plane, are DERIVED from a measurement outside the paper: "
            "vLLM PR #2221's LLaMA-70B throughput on 8 A100-40GB with Ray calls and with NCCL broadcast, on two "
            "workloads (ShareGPT 3.01 vs 5.08 req/s; 1031/317 tokens 2.48 vs 3.48), solved together with the "
            "per-sequence payload's shape MEASURED (v0.2.6 sent every sequence's full token lists each step, the "
            "paper's engine only its new tokens: `python -m kvlab.paperlib.era_payload`; the payload scale is "
            f"{tp.get('payload_scale', math.nan):.3f}; `python -m kvlab.paperlib.era_tp`, "
            "`results/paper/era2023/tp_fit.json`). "
            f"`a` = **{ar.get('engine_allreduce_us', math.nan):.1f} µs** per all-reduce, the engine's NCCL path "
            "beyond the datasheet's ~10 µs, is DERIVED from a second measurement outside the paper: vLLM PR "
            "#2192's latency benchmark with NCCL and with a latency-optimal custom all-reduce (Llama-70B TP 4 and "
            f"LLaMA-33B TP 2 on A100-80G: {ar_rows[0]:.1f} and {ar_rows[1]:.1f} µs saved per call; "
            "`python -m kvlab.paperlib.era_allreduce`, `results/paper/era2023/allreduce_fit.json`). "
            "Every capacity below is then a "
            "prediction, read as the paper read its curves: the rate where the mean normalized latency crosses "
            "0.5 s/token on a trace like the paper's (Poisson arrivals for one hour, 15 minutes on OPT-175B, the "
            "first 60 s dropped; `vllm-paper.md` 2.3-2.4). The saturated throughput X (every request at t=0) only "
            "anchors each sweep: a check point at 0.9 X, then up 1.0, 1.1, 1.25, 1.5, 2 x X while under the "
            "threshold, or down 0.7, 0.5, 0.3, 0.2, 0.1 x X while over it (request-level batching, whose requests "
            "wait for a whole batch of others to finish); column *capacity / X*. The roofline column is "
            "the mode above (0.25 s/token crossing "
            "of a short trace). Reproduce: `python -m kvlab.paperlib.era` (results/paper/era2023/).", "",
            *lines, "",
            f"Paper-era capacities within 25% of the paper's digitized value: **{within} of {len(err)}** "
            f"(median |error| {err.abs().median():.0f}%; per panel {per_panel})."
            + (f" Misses: {misses}." if misses else "")
            + (f" The fixed-count reading (the previous one, last column: every rate run on 500 ShareGPT / 1,200 "
               "Alpaca requests, X unless the curve is over 0.5 s/token at 0.9 X, then the walk down; "
               f"`fig12_capacity_fixed.csv`) has {fixed_within} of {len(err)}." if len(fixed) else ""), "",
            f"Where it misses: on one GPU (panels a, d) {one_gpu} of 10 land within 25%: the per-sequence share "
            "of the engine's host work carries from ShareGPT's ~30-sequence batches to Alpaca's ~150. On "
            f"several GPUs (panels b, c, e, f) {tp_within} of 20 land within 25%: with the Ray call a fixed cost per "
            "step and worker (the PR's two points, read with each engine's measured payload) and the engine's "
            "all-reduce, the small-batch rows on 66B (b) and the large-batch rows on 175B/Alpaca (f) both land; "
            f"the TP rows that miss are FasterTransformer's ({ft_tp}). "
            f"Every vLLM and Orca row crosses at {others.min():.2f}-{others.max():.2f} X; FasterTransformer's rows "
            f"at {ft_rows}. What "
            "remains: on OPT-175B/ShareGPT (c) the paper's FT sustains about the same rate as on 66B/4 GPUs "
            "although it has 12x the KV memory, which no memory-sized batch explains (its batch size B is "
            "unstated, `vllm-paper.md` 2.5); on 66B/Alpaca (e) it sustains more than Orca (Max), which has the "
            "same memory per request, which a Python engine's host cost on every step does not allow "
            "(docs/simulator.md, *FasterTransformer: the crossing below X*); on 175B/Alpaca (f) FT's curve on the "
            "15-minute trace lies near 0.5 s/token from 0.2 X to 0.7 X, so its crossing is decided by noise "
            "(docs/simulator.md, *Reading the crossing on the paper's traces*). The issue's target (every panel "
            "within 25%) is NOT met.", ""]


def main(argv: list[str] | None = None) -> int:
    """``python -m kvlab.paperlib.era [--fit] [--jobs N]``: refit the one constant, or run Fig. 12."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m kvlab.paperlib.era", description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit the one constant k on the one named point")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs")
    ap.add_argument("--trace", action="append", default=[], metavar="DATASET=PATH",
                    help="run DATASET's panels (sharegpt, alpaca) on this trace file instead of the synthetic "
                         f"lengths; writes to --out (default {TRACES_ROOT.relative_to(REPO)})")
    ap.add_argument("--out", type=Path, default=None, help=f"results folder (default {ROOT.relative_to(REPO)})")
    args = ap.parse_args(argv)
    try:
        traces = parse_traces(args.trace)
    except ValueError as e:
        ap.error(str(e))
    root = args.out or (TRACES_ROOT if traces else ROOT)
    if args.fit:
        out = fit(ROOT)
        print(f"k = {out['k']} (fit.json in {ROOT}); set in conf/experiment/era/paper2023.yaml:\n"
              f"  engine_step_overhead_us: {out['engine_step_overhead_us']}\n"
              f"  engine_per_seq_us: {out['engine_per_seq_us']}")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    table = run(root, args.jobs, not args.fresh, traces=traces)
    print(table.to_string(index=False))
    print(f"results: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
