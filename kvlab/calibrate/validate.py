"""``python -m kvlab.calibrate --validate PATH``: held-out workloads through both executors.

Every workload here differs from what the fit saw (the grid's synthetic step shapes and the host
overhead's calibration workload, seed 9001): other seeds, length ranges and arrival processes,
and scheduler/allocator settings the grid never exercised as a whole run. Each runs on the real
executor and on ``executor=sim hardware=calibrated hardware.profile=PATH``; the table gives the
simulator's error per metric. Poisson rates are set from the *simulator's* predicted saturated
throughput of the offline batch (0.5x and 2x), so no real measurement feeds a prediction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from kvlab.calibrate.calibrate import build_real_executor, profiled_executor_overrides
from kvlab.calibrate.probe import probe
from kvlab.calibrate.runs import StepRecorder, compose, run_workload
from kvlab.calibrate.undisturbed import DEFAULT_MAX_STEAL, DEFAULT_RERUNS, run_undisturbed, wait_quiet
from kvlab.calibration_profile import check_provenance, describe, load_profile
from kvlab.executor.cost_calibrated import CalibratedCostModel
from kvlab.hardware import TIME_SCALE_KEYS
from kvlab.machine import busy_message, load_average

METRICS = {"output_throughput": "output tok/s", "mean_ttft_ms": "mean TTFT ms", "p90_ttft_ms": "p90 TTFT ms",
           "mean_tpot_ms": "mean TPOT ms", "normalized_latency_s_per_token": "mean norm. latency s/tok",
           "mean_batched_requests": "mean batch", "num_preemptions": "preemptions"}
RELATIVE = [m for m in METRICS if m != "num_preemptions"]
SCALES = TIME_SCALE_KEYS  # the probe's regimes, as hardware.* keys
# A speed probe stolen above the steal bound is retaken (after a quiet wait) at most this many times.
# On 2026-12-07 the probes around three unstolen offline runs (the probes' own steal unmeasured then)
# read the machine 9-13% slower than the model, while the runs were 20% faster than usual.
PROBE_RETAKES = 3


def _uniform(n: int, p: tuple[int, int], o: tuple[int, int], seed: int) -> list[str]:
    return ["workload=uniform", f"workload.num_requests={n}", f"workload.seed={seed}",
            f"workload.prompt_len_min={p[0]}", f"workload.prompt_len_max={p[1]}",
            f"workload.output_len_min={o[0]}", f"workload.output_len_max={o[1]}"]


def workloads(quick: bool) -> list[tuple[str, list[str], float | None]]:
    """(name, overrides, rate as a multiple of the predicted saturated throughput or None=offline)."""
    k = 1 if quick else 2  # size factor
    # Arrival-driven runs need more requests than offline ones for a stable mean TTFT (a queueing
    # quantity): with 16-20 requests two runs of the same code gave -9% and +24% TTFT error at 2x
    # saturation, so the full mode runs 32-40 of them.
    a = 1 if quick else 4
    rows = [("offline batch", _uniform(10 * k, (24, 200), (16, 48 * k), 101), None),
            ("poisson 0.5x saturation", _uniform(8 * a, (16, 160), (16, 40 * k), 202), 0.5),
            ("poisson 2x saturation", _uniform(10 * a, (16, 160), (16, 40 * k), 303), 2.0)]
    if quick:
        return rows
    rows += [
        ("long prompts, chunked prefill", _uniform(6, (600, 1000), (16, 32), 404)
         + ["scheduler.chunked_prefill=true", "scheduler.max_num_batched_tokens=256"], None),
        ("shared prefix, prefix allocator", ["workload=shared_prefix", "workload.num_requests=32",
                                             "workload.prefix_len=192", "workload.seed=505", "allocator=prefix",
                                             "workload.output_len_min=16", "workload.output_len_max=48"], 1.0),
        ("preemption, tiny KV", _uniform(16, (64, 160), (48, 112), 606) + ["allocator.num_blocks=48"], None),
    ]
    return rows


def sim_overrides(prof: dict[str, Any], *, force: bool = False) -> list[str]:
    """Hydra overrides that run the calibrated simulator from ``prof`` on the profiled model
    (validation's simulator side; ``experiments/calib_row_sensitivity.py`` too)."""
    return ["executor=sim", "hardware=calibrated", f"hardware.profile={prof['path']}",
            f"model={prof.get('model_group') or prof['model']}", f"model.dtype_bytes={prof['dtype_bytes']}",
            f"hardware.force={str(force).lower()}", "kv.swap_space_gib=0", "show_progress=false",
            *(prof.get("model_overrides") or [])]


def _errors(real: dict[str, float], sim: dict[str, float]) -> dict[str, float]:
    out = {}
    for m in METRICS:
        r, s = float(real.get(m, math.nan)), float(sim.get(m, math.nan))
        out[f"real_{m}"], out[f"sim_{m}"] = r, s
        if m in RELATIVE:
            out[f"err_{m}"] = 100 * (s - r) / r if r else math.nan
        else:
            out[f"err_{m}"] = s - r  # preemptions: absolute difference
    return out


def aggregate_real(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Repeated real runs of one workload -> (median per metric, spread per relative metric: (max -
    min) / median in %). The spread is the machine's own run-to-run noise, the floor under any error
    the simulator can be shown to have."""
    median, spread = {}, {}
    for m in METRICS:
        v = sorted(float(r.get(m, math.nan)) for r in runs)
        median[m] = float(pd.Series(v).median())
        if m in RELATIVE:
            spread[f"real_spread_{m}"] = 100 * (v[-1] - v[0]) / abs(median[m]) if median[m] else math.nan
    return median, spread


def validate(profile_path: str | Path, *, quick: bool = False, force: bool = False, out_csv: Path | None = None,
             executor: Any = None, log: Any = print, real_repeats: int = 1, speed_probe: bool = False,
             max_steal: float | None = DEFAULT_MAX_STEAL, steal_reruns: int = DEFAULT_RERUNS,
             quiet_wait_s: float = 0.0) -> pd.DataFrame:
    """Run the held-out workloads; returns (and writes) the error table. ``real_repeats`` > 1 runs
    each workload that many times on the real executor and compares the simulator with the median
    run; the table then also carries the real runs' spread (``real_spread_*``). ``speed_probe``:
    time the probe's shapes against the profile's model (:mod:`kvlab.calibrate.probe`) before and
    after every real run and predict that run with the simulator at the mean of the two, per
    regime (``hardware.time_scale``, ``time_scale_dense_decode``, ``time_scale_prefill``); the
    simulator's metrics are then the median over the repeats too (columns named like the scales:
    their medians, ``*_min``/``*_max``: the probes' range). A real run whose CPU steal exceeds
    ``max_steal`` % is discarded and run again, at most ``steal_reruns`` times per workload (a
    stolen speed probe is retaken, at most ``PROBE_RETAKES`` times)
    (:mod:`kvlab.calibrate.undisturbed`); ``real_steal_pct``/``real_steal_max_pct`` give the kept
    runs' median and largest steal, ``real_discarded`` how many runs were thrown away. With
    ``quiet_wait_s`` > 0 it first waits up to that long for a busy moment's steal to fall under
    ``max_steal``, and again before each rerun (:func:`kvlab.calibrate.undisturbed.wait_quiet`)."""
    if real_repeats < 1:
        raise ValueError(f"real_repeats must be >= 1, got {real_repeats}")
    if steal_reruns < 0:
        raise ValueError(f"steal_reruns must be >= 0, got {steal_reruns}")
    prof = load_profile(profile_path)
    problems = check_provenance(prof, force=force)
    if problems:
        log("WARNING (forced): " + "; ".join(problems))
    log(f"validate: profile {describe(prof)}")
    load_before = load_average()
    warn = busy_message(load_before)
    log(f"load average {load_before}" + (f"\nWARNING: {warn}" if warn else ""))
    block_rows = int(prof.get("block_rows") or 0)
    real_ov = profiled_executor_overrides(prof)
    sim_ov = sim_overrides(prof, force=force)
    if executor is None:
        log("loading the model on the real executor ...")
        executor = build_real_executor(real_ov)
    wls = workloads(quick)

    def quiet() -> None:
        if quiet_wait_s > 0 and max_steal is not None:
            wait_quiet(max_steal, quiet_wait_s, log=log)

    def read_speed() -> dict[str, Any]:  # a probe the neighbours left alone, like a run
        def retake(steal: float) -> None:
            log(f"  the speed probe lost {steal:.1f}% of its CPU time to steal (> {max_steal:g}%): taking it again")
            quiet()
        return run_undisturbed(lambda: probe(executor, prof), max_steal=max_steal, budget=PROBE_RETAKES,
                               on_discard=retake).result

    quiet()
    sat = run_workload(compose(sim_ov + wls[0][1] + ["workload.rate=null"]))["metrics"]["request_throughput"]
    rows = []
    for name, ov, mult in tqdm(wls, desc="held-out workloads", unit="run", dynamic_ncols=True):
        rate = "workload.rate=null" if mult is None else f"workload.rate={round(mult * sat, 4)}"
        # --speed-probe: probes bracket every real repeat (the one after a repeat is the one before
        # the next), and that repeat's simulator runs at the mean of its two probes, per regime
        probes = [read_speed()] if speed_probe else []
        runs, sims, scales, diags, steals, discarded = [], [], [], [], [], []

        def once(ov: list[str] = ov, rate: str = rate) -> tuple[dict[str, Any], StepRecorder]:
            rec = StepRecorder(executor, block_rows)
            return run_workload(compose(real_ov + ov + [rate]), rec), rec

        def discard(steal: float, name: str = name, probes: list[dict[str, Any]] = probes) -> None:
            log(f"  {name}: a real run lost {steal:.1f}% of its CPU time to steal (> {max_steal:g}%): "
                "discarded, running it again")
            quiet()
            if speed_probe:  # the retry's first probe is taken now, not before the discarded run
                probes[-1] = read_speed()

        for _ in range(real_repeats):
            got = run_undisturbed(once, max_steal=max_steal, budget=steal_reruns - len(discarded),
                                  on_discard=discard)
            (real_run, rec), steal = got.result, got.steal_pct
            steals.append(steal)
            discarded += got.discarded
            runs.append(real_run["metrics"])
            scale = dict.fromkeys(SCALES, 1.0) | {"time_scale_dense_decode_slope": 0.0}
            if speed_probe:
                probes.append(read_speed())
                scale = {k: (probes[-2][k] + probes[-1][k]) / 2 for k in SCALES}
            if not sims or speed_probe:  # without the probe every repeat's prediction is the same run
                sim_cfg = compose(sim_ov + ov + [rate] + [f"hardware.{k}={v:.4f}" for k, v in scale.items()])
                sims.append(run_workload(sim_cfg)["metrics"])
            scales.append(scale)
            diags.append(step_diagnostics(CalibratedCostModel.from_profile(prof, scale), rec.steps,
                                          real_run["engine"].step_records, real_run["engine"].request_records))
        real, spread = aggregate_real(runs)
        sim, _ = aggregate_real(sims)
        diag = {k: float(pd.Series([d[k] for d in diags]).median()) for k in diags[0]}
        med = {k: float(pd.Series([s[k] for s in scales]).median()) for k in SCALES}
        rows.append({"workload": name, "rate": rate.split("=")[1], **_errors(real, sim), **diag,
                     **(spread if real_repeats > 1 else {}), "real_repeats": real_repeats, **med,
                     "real_steal_pct": float(pd.Series(steals).median()),
                     "real_steal_max_pct": float(pd.Series(steals).max()),
                     "real_discarded": len(discarded),
                     **({f"{k}_{e}": f(p[k] for p in probes) for k in SCALES for e, f in (("min", min), ("max", max))}
                        if speed_probe else {})})
        log(f"  {name}: " + (f"time_scale {med['time_scale']:.3f} block / {med['time_scale_dense_decode']:.3f} "
                             f"dense decode (slope {med['time_scale_dense_decode_slope']:+.3f}) / "
                             f"{med['time_scale_prefill']:.3f} prefill, " if speed_probe else "")
            + f"output tok/s real {real['output_throughput']:.1f}"
            + (f" (median of {real_repeats}, spread {spread['real_spread_output_throughput']:.1f}%)"
               if real_repeats > 1 else "") + f" sim {sim['output_throughput']:.1f}"
            + f", CPU steal {pd.Series(steals).max():.1f}% at most"
            + (f" ({len(discarded)} run(s) discarded)" if discarded else ""))
        if out_csv is not None:  # after every workload: a long run stopped midway keeps its rows
            out_csv.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out_csv, index=False, float_format="%.4g")
    table = pd.DataFrame(rows)
    table.attrs["load_average"] = {"before": load_before, "after": load_average()}
    return table


def step_diagnostics(model: CalibratedCostModel, steps: list[tuple[dict[str, float], float]],
                     records: list[Any], requests: list[Any] | None = None) -> dict[str, float]:
    """Where a real run's time went vs the model, step by step: ``exec_err_pct`` is the model's
    total ``execute()`` time on the run's own step shapes vs the measured total (%), and
    ``host_ms_real``/``host_ms_model`` the mean engine time per step outside ``execute()`` (with
    ``requests``, leaving out the gaps in which the engine idled for an arrival);
    ``exec_err_prefill_pct``/``exec_err_decode_pct`` split the first by steps with and without a
    prompt chunk."""
    from kvlab.calibrate.overhead import host_gaps

    pred = sum(model.execute_time(f) for f, _ in steps)
    meas = sum(d for _, d in steps)
    gaps = host_gaps(records, requests)

    def err(sel: list[tuple[dict[str, float], float]]) -> float:
        m = sum(d for _, d in sel)
        return 100 * (sum(model.execute_time(f) for f, _ in sel) - m) / m if m else math.nan

    return {"steps": len(steps), "exec_err_pct": 100 * (pred - meas) / meas if meas else math.nan,
            "exec_err_prefill_pct": err([s for s in steps if s[0]["chunks"] > 0]),
            "exec_err_decode_pct": err([s for s in steps if s[0]["chunks"] == 0]),
            "host_ms_real": 1e3 * sum(g for _, g in gaps) / len(gaps) if gaps else math.nan,
            "host_ms_model": 1e3 * sum(model.host_time(n) for n, _ in gaps) / len(gaps) if gaps else math.nan}


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Mean absolute error (%) per relative metric over the table's rows; preemptions: mean |diff|."""
    out = {m: float(table[f"err_{m}"].abs().mean()) for m in RELATIVE}
    out["num_preemptions"] = float(table["err_num_preemptions"].abs().mean())
    return out


def markdown(table: pd.DataFrame) -> str:
    """The error table as Markdown: one row per workload, sim error per metric (% or diff)."""
    diag = "exec_err_pct" in table.columns
    head = "| workload | rate | " + " | ".join(METRICS.values()) + (
        " | step model vs measured execute(): all / prefill steps / decode steps | host ms/step real / model |"
        if diag else " |")
    lines = [head, "|" + " --- |" * (len(METRICS) + 2 + 2 * diag)]
    for r in table.to_dict("records"):
        cells = []
        for m in METRICS:
            e = r[f"err_{m}"]
            cells.append(f"{e:+.0f} ({r[f'real_{m}']:.0f}→{r[f'sim_{m}']:.0f})" if m == "num_preemptions"
                         else f"{e:+.1f}%")
        if diag:
            cells += [f"{r['exec_err_pct']:+.1f}% / {r.get('exec_err_prefill_pct', math.nan):+.1f}% / "
                      f"{r.get('exec_err_decode_pct', math.nan):+.1f}%",
                      f"{r['host_ms_real']:.2f} / {r['host_ms_model']:.2f}"]
        lines.append(f"| {r['workload']} | {r['rate']} | " + " | ".join(cells) + " |")
    s = summary(table)
    lines.append("| **mean abs. error** | | " + " | ".join(
        f"{s[m]:.1f}" if m == "num_preemptions" else f"{s[m]:.1f}%" for m in METRICS) + (
        f" | {table['exec_err_pct'].abs().mean():.1f}% | |" if diag else " |"))
    if f"real_spread_{RELATIVE[0]}" in table.columns:
        n = int(table["real_repeats"].max())
        lines.append(f"| *real runs' own spread (max-min of {n}, mean)* | | " + " | ".join(
            f"{table[f'real_spread_{m}'].mean():.1f}%" if m in RELATIVE else "" for m in METRICS)
            + (" | | |" if diag else " |"))
    if "real_steal_max_pct" in table.columns:
        lines.append("\nCPU steal during the kept real runs (largest per workload): " + ", ".join(
            f"{r['workload']} {r['real_steal_max_pct']:.1f}%" for r in table.to_dict("records"))
            + f"; runs discarded for steal: {int(table['real_discarded'].sum())}.")
    return "\n".join(lines)
