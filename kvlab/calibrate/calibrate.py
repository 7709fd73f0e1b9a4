"""``python -m kvlab.calibrate``: profile the real executor, fit the cost model, write a profile.

Steps: (1) record the machine and its load average (warn when busy; optionally wait for a quiet
moment, :mod:`kvlab.calibrate.undisturbed`); (2) load the model on the
real executor (CPU, or CUDA when ``--device cuda``); (3) time the designed grid
(:mod:`kvlab.calibrate.grid`) with warm-up and repeats, half of the repeats before and half after
(4) two real calibration runs: the engine's host overhead on the offline one
(:mod:`kvlab.calibrate.overhead`), and every real step of both, which joins the grid in (5) the
step-time fit by NNLS on relative error (:mod:`kvlab.calibrate.fit`); (6) write the profile
(:mod:`kvlab.calibration_profile`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from kvlab.calibrate.fit import FitResult, fit_relative
from kvlab.calibrate.grid import design, measure_around
from kvlab.calibrate.overhead import measure_host, record_arrival_steps
from kvlab.calibrate.runs import CONF_DIR, block_rows_of, compose
from kvlab.calibrate.undisturbed import DEFAULT_MAX_STEAL, wait_quiet
from kvlab.calibration_profile import write_profile
from kvlab.executor.cost_calibrated import FEATURE_NAMES, FEATURES, HOST_FEATURES
from kvlab.machine import busy_message, cpu_ticks, fingerprint, load_average, steal_percent

REPO = CONF_DIR.parent
DEFAULT_DIR = REPO / "results" / "calibration"
FORM = ("t_step = c_step + c_decode_seq*decode_seqs + c_chunk*chunks + c_token*tokens + c_decode_kv*decode_kv "
        "+ c_decode_pad*decode_pad + c_chunk_kv*chunk_kv + c_causal_pair*causal_pairs "
        "+ c_masked_pair*masked_pairs + c_head*head + c_logit_row*logit_rows "
        "+ [c_block_step*block_step + c_block_token*block_tokens + c_block_multirow*block_multirow "
        "+ c_block_head*block_head "
        "+ c_block_logit_row*block_logit_rows: steps/rows <= block_rows on GGUF blocks] "
        "+ h_step + h_seq*seqs  (seconds; kvlab/executor/cost_calibrated.py)")
METHOD = ("per grid point: median of repeats after warm-up, shuffled order per pass, half of the repeats before "
          "and half after the real calibration runs; plus every real step of two "
          "calibration runs (offline seed 9001; arrivals at 1 req/s seed 9002), weighted so grid and real steps "
          "count equally; fit: non-negative least "
          "squares on relative error (rows scaled by 1/measured, Lawson-Hanson); host overhead: medians of "
          "per-step wall gaps outside execute() grouped by running sequences, NNLS line through them")


def executor_overrides(model: str, dtype: str, device: str, threads: int, extra: list[str] | None = None) -> list[str]:
    """Hydra overrides of the profiled real executor (``extra``: e.g. ``model.checkpoint=random``).
    No CPU swap pool (``kv.swap_space_gib=0``): allocating it costs seconds per engine and the
    held-out runs preempt by recompute."""
    return ["executor=torch", f"model={model}", f"dtype={dtype}", f"device={device}",
            f"executor.num_threads={threads}", "kv.swap_space_gib=0", "show_progress=false", *(extra or [])]


def profiled_executor_overrides(prof: dict[str, Any], threads: int | None = None) -> list[str]:
    """Hydra overrides of the real executor a loaded profile (``load_profile``) was made with:
    its model, dtype, device, threads (unless ``threads`` is given) and extra overrides, and the
    profile's GGUF block rows rather than a fresh start-up measurement, so the executor routes the
    same steps to the same matmul path as when profiled."""
    block_rows = int(prof.get("block_rows") or 0)
    return executor_overrides(prof.get("model_group") or prof["model"], prof["dtype"],
                              str(prof["machine"].get("device", "cpu")),
                              int(prof["threads"]) if threads is None else threads,
                              list(prof.get("model_overrides") or [])) + [
        f"executor.weight_blocks={block_rows if block_rows else 'off'}"]


def build_real_executor(overrides: list[str]) -> Any:
    from kvlab.executor.torch_runner import build_torch_executor

    return build_torch_executor(compose(overrides))


def _base_hardware(device: str, base: str | None) -> dict[str, Any]:
    name = base or ("cpu" if device == "cpu" else None)
    if name is None:
        raise ValueError("--base-hardware is required on CUDA (the datasheet yaml for swaps/copies, e.g. h200)")
    path = CONF_DIR / "hardware" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF_DIR / "hardware").glob("*.yaml") if p.stem != "calibrated")
        raise ValueError(f"--base-hardware={name!r} is unknown; choose one of: {', '.join(choices)}")
    hw = yaml.safe_load(path.read_text())
    hw["name"] = "calibrated"
    return hw


def default_path(model: str, dtype: str, device: str) -> Path:
    return DEFAULT_DIR / f"{model}-{dtype}-{device}.json"


def calibrate(*, model: str = "smollm2-135m", dtype: str = "float32", device: str = "cpu",
              threads: int | None = None, quick: bool = False, repeats: int | None = None,
              out: Path | None = None, base_hardware: str | None = None, host_requests: int | None = None,
              executor: Any = None, extra: list[str] | None = None, log: Any = print,
              max_steal: float = DEFAULT_MAX_STEAL, quiet_wait_s: float = 0.0) -> Path:
    """Run the whole calibration; returns the profile path. ``executor``: reuse a built one;
    ``extra``: more Hydra overrides of the model/executor (recorded in the profile). With
    ``quiet_wait_s`` > 0 it first waits up to that long for the CPU steal of a busy moment to fall
    under ``max_steal`` % (:func:`kvlab.calibrate.undisturbed.wait_quiet`); the steal over the
    whole calibration is recorded in the profile (``steal_pct``) and warned about above the bound."""
    threads = int(threads or os.cpu_count() or 1)
    t0 = time.perf_counter()
    load_before = load_average()
    log(f"calibrate: {model} {dtype} on {device}, {threads} threads, {'quick' if quick else 'full'} grid; "
        f"load average {load_before}")
    warn = busy_message(load_before)
    if warn:
        log(f"WARNING: {warn}")
    ov = executor_overrides(model, dtype, device, threads, extra)
    cfg = compose(ov)
    if executor is None:
        log("loading the model on the real executor ...")
        executor = build_real_executor(ov)
    if quiet_wait_s > 0:
        wait_quiet(max_steal, quiet_wait_s, log=log)
    ticks_before = cpu_ticks()  # the steal over the measurements, not over the model's loading
    block_rows = block_rows_of(executor)
    if block_rows:
        log(f"matmuls of <= {block_rows} rows read the GGUF blocks (executor.weight_blocks): block terms fitted")
    points = design(quick)
    reps = repeats or (2 if quick else 4)

    def real_runs() -> tuple[dict[str, Any], dict[str, Any]]:
        bar.clear()
        log("measuring the engine's host overhead on the calibration workload ...")
        host = measure_host(executor, ov, host_requests or (8 if quick else 16), block_rows)
        log(f"host overhead: {1e3 * host['fit']['step']:.2f} ms/step + {1e6 * host['fit']['seqs']:.0f} us/seq "
            f"({host['num_steps']} steps)")
        log("recording real steps of the arrivals calibration workload ...")
        return host, record_arrival_steps(executor, ov, 8 if quick else 24, block_rows)

    # half of the grid's repeats before the real calibration runs, half after (grid.measure_around)
    with tqdm(total=len(points) * (reps + min(reps, 2)), desc="grid steps", unit="step", dynamic_ncols=True) as bar:
        measured, (host, arrivals) = measure_around(
            executor, points, reps, real_runs, warmup=1,
            progress=lambda d, n, name: (bar.update(d - bar.n), bar.set_postfix_str(name, refresh=False)))
    real = host.pop("steps") + arrivals["steps"]
    real = [(f, d) for f, d in real if d > 0 and (f["step"] + f["block_step"]) > 0]
    # grid medians and real steps carry equal total weight in the fit
    w_real = (len(measured) / len(real)) ** 0.5 if real else 0.0
    feats = [m.point.features(block_rows) for m in measured] + [f for f, _ in real]
    times = [m.median for m in measured] + [d for _, d in real]
    fit_all = fit_relative(feats, times, FEATURE_NAMES, [1.0] * len(measured) + [w_real] * len(real))
    n = len(measured)
    fit = FitResult(fit_all.coef, fit_all.predicted[:n], fit_all.measured[:n])
    real_fit = FitResult(fit_all.coef, fit_all.predicted[n:], fit_all.measured[n:])
    log(f"step-time fit: {n} grid points + {len(real)} real calibration steps; grid RMS relative error "
        f"{100 * fit.rms_rel_error:.1f}% (max {100 * fit.max_abs_rel_error:.1f}%), real steps "
        f"{100 * real_fit.rms_rel_error:.1f}%")
    from kvlab.models.shapes import ModelShape

    shape = ModelShape.from_config({k: v for k, v in cfg["model"].items()
                                    if k not in ("checkpoint", "rope_theta")} | {"dtype_bytes": _dtype_bytes(dtype)})
    load_after, steal = load_average(), steal_percent(ticks_before, cpu_ticks())
    log(f"CPU steal during the calibration: {steal:.1f}% of the VM's CPU time (the hypervisor running others)")
    if steal > max_steal:
        steal_warn = (f"{steal:.1f}% of the calibration's CPU time was stolen by other VMs (> {max_steal:g}%): "
                      "the fit carries their load; recalibrate on a quieter machine")
        log(f"WARNING: {steal_warn}")
        warn = f"{warn} {steal_warn}" if warn else steal_warn
    profile = {
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": fingerprint(device), "model": cfg["model"]["name"], "model_group": model,
        "model_overrides": list(extra or []),
        "dtype": dtype, "dtype_bytes": _dtype_bytes(dtype),
        "threads": threads, "torch": _torch_version(), "mode": "quick" if quick else "full",
        "load_average": {"before": load_before, "after": load_after}, "busy_warning": warn,
        "steal_pct": None if math.isnan(steal) else round(steal, 2),
        "form": FORM, "method": METHOD, "block_rows": block_rows,
        "coefficients": {k: {"value": fit.coef[k], "unit": f"s/{u}", "meaning": m} for k, u, m in FEATURES},
        "host_overhead": {k: {"value": host["fit"][k], "unit": f"s/{u}", "meaning": m} for k, u, m in HOST_FEATURES},
        "host_measurement": {k: v for k, v in host.items() if k != "fit"},
        "derived": _derived(fit.coef, shape),
        "kv_budget_bytes": int(executor.kv_budget_bytes()) if hasattr(executor, "kv_budget_bytes") else None,
        "hardware": _base_hardware(device, base_hardware),
        "fit": {"num_points": len(points), "repeats": reps, "warmup": 1,
                "real_steps": {"count": len(real), "weight": w_real, "rms_rel_error": real_fit.rms_rel_error,
                               "workloads": [host["workload"], arrivals["workload"]]},
                "rms_rel_error": fit.rms_rel_error, "max_abs_rel_error": fit.max_abs_rel_error,
                "residuals": [{"point": m.point.name, "block_size": m.point.block_size,
                               "measured_s": m.median, "predicted_s": p, "rel_error": (p - m.median) / m.median,
                               "rel_iqr": m.rel_iqr, **{k: v for k, v in m.point.features(block_rows).items() if v}}
                              for m, p in zip(measured, fit.predicted)]},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    path = write_profile(profile, out or default_path(model, dtype, device))
    log(f"took {profile['seconds']:.0f} s; load average after {load_after}")
    return path


def _dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _derived(coef: dict[str, float], shape: Any) -> dict[str, float | None]:
    """Achieved rates implied by the coefficients (None where a coefficient fitted to 0)."""
    def rate(num: float, c: float) -> float | None:
        return num / c if c > 0 else None

    return {"dense_gflop_s": _g(rate(2 * shape.matmul_params_per_gpu, coef["tokens"])),
            "decode_kv_gb_s": _g(rate(shape.kv_bytes_per_token_per_gpu, coef["decode_kv"])),
            "lm_head_gflop_s": _g(rate(2 * shape.lm_head_params_per_gpu, coef["logit_rows"]))}


def _g(x: float | None) -> float | None:
    return None if x is None else x / 1e9
