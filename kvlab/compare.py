"""``python -m kvlab.compare <sweep dir> [--out DIR]``: one CSV and the paper-style plots for a sweep.

Walks a Hydra multirun directory: every job directory holding ``metrics.json`` and/or its resolved
config (``config.yaml`` or ``.hydra/config.yaml``) becomes one CSV row (flattened config columns
such as ``allocator.name`` + metric columns + ``job`` + ``status``). A "system" is the combination
of config values that vary across jobs, except the request rate and seeds. Plots: normalized
latency vs request rate (Fig. 12 style), KV memory categories as stacked bars (Fig. 2 style) and
mean batched requests (Fig. 13 style). Jobs with missing metrics stay in the CSV and are skipped
in the plots.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kvlab.metrics import MEMORY_CATEGORIES, read_metrics_json

RATE = "workload.rate"
NOT_A_SYSTEM = {RATE, "seed", "workload.seed", "output_dir", "show_progress", "experiment"}
MEM_COLORS = {"token_states": "#2ca02c", "reservation": "#ff7f0e", "internal_frag": "#d62728",
              "external_frag": "#9e9e9e"}
MEM_LABELS = {"token_states": "Token states", "reservation": "Reservation",
              "internal_frag": "Internal frag.", "external_frag": "External frag. & others"}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON strings."""
    if not isinstance(d, dict):
        return {prefix: json.dumps(d) if isinstance(d, list) else d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def find_jobs(sweep_dir: Path) -> list[Path]:
    dirs = {p.parent for p in sweep_dir.rglob("metrics.json")}
    dirs |= {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    if (sweep_dir / "multirun.yaml").exists() and not (sweep_dir / "metrics.json").exists():
        dirs.discard(sweep_dir)
    return sorted(dirs, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])


def load_job(job: Path, sweep_dir: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """(flattened config, metrics) of one job; a row-level ``status`` says what was missing."""
    row: dict[str, Any] = {"job": str(job.relative_to(sweep_dir)) or ".", "status": "ok"}
    for cfg_path in (job / "config.yaml", job / ".hydra" / "config.yaml"):
        if cfg_path.exists():
            try:
                row.update(flatten(yaml.safe_load(cfg_path.read_text()) or {}))
            except yaml.YAMLError as e:
                row["status"] = f"bad config: {e.__class__.__name__}"
            break
    else:
        row["status"] = "no config"
    metrics: dict[str, float] = {}
    try:
        metrics = read_metrics_json(job / "metrics.json")
    except FileNotFoundError:
        row["status"] = "no metrics.json"
    except (json.JSONDecodeError, AttributeError):
        row["status"] = "bad metrics.json"
    return row, metrics


PROVENANCE = {  # manifest field -> what a difference means for the comparison
    "cpu.model": "CPU model", "gpu": "GPU", "versions.kvlab": "kvlab version", "versions.torch": "torch version",
    "threads": "thread count", "config.dtype": "dtype",
}


def provenance_warnings(jobs: list[Path], sweep_dir: Path) -> list[str]:
    """Warnings when the jobs' ``manifest.json`` files say they ran on different machines,
    software or dtypes (jobs without a manifest are named once: their provenance is unknown)."""
    seen: dict[str, dict[str, list[str]]] = {k: {} for k in PROVENANCE}
    missing = []
    for job in jobs:
        name = str(job.relative_to(sweep_dir)) or "."
        try:
            raw = json.loads((job / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            missing.append(name)
            continue
        m = flatten({k: v for k, v in raw.items() if k != "gpu"})
        m["gpu"] = ", ".join(g.get("name", "?") for g in raw.get("gpu") or []) or "none"
        for key in PROVENANCE:
            value = m.get(key)
            seen[key].setdefault(str(value), []).append(name)
    out = [f"runs differ in {PROVENANCE[k]}: " + "; ".join(f"{v} ({', '.join(js[:3])}{' ...' if len(js) > 3 else ''})"
                                                          for v, js in vals.items())
           for k, vals in seen.items() if len(vals) > 1]
    if missing and len(missing) < len(jobs):
        out.append(f"{len(missing)} job(s) have no manifest.json, so their machine is unknown: "
                   f"{', '.join(missing[:3])}")
    return out


def _rate(v: Any) -> float:
    try:
        return math.inf if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """The sweep as a DataFrame (one row per job) and the config columns that define a system."""
    rows, config_cols, metric_cols = [], [], []
    for job in find_jobs(sweep_dir):
        cfg, metrics = load_job(job, sweep_dir)
        config_cols += [k for k in cfg if k not in config_cols]
        metric_cols += [k for k in metrics if k not in metric_cols]
        rows.append({**cfg, **metrics})
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(config_cols + metric_cols)))
    if RATE in df:
        df[RATE] = df[RATE].map(_rate)
    varying = [c for c in config_cols if c not in ("job", "status") and c not in NOT_A_SYSTEM
               and not c.startswith("hydra.") and df[c].map(str).nunique() > 1]
    df.insert(0, "system", _labels(df, varying))
    return df, varying


def _labels(df: pd.DataFrame, cols: list[str]) -> list[str]:
    if not cols:
        return ["all"] * len(df)
    short = {c: c.split(".")[-2] if c.endswith(".name") and "." in c else c.split(".")[-1] for c in cols}
    if len(set(short.values())) < len(short):
        short = {c: c for c in cols}
    def present(v: Any) -> bool:  # unset keys (null / NaN) do not name the system
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    return [", ".join(f"{short[c]}={row[c]}" for c in cols if present(row[c])) or "default"
            for _, row in df.iterrows()]


def _context(df: pd.DataFrame) -> str:
    keys = ("model.name", "hardware.name", "workload.name")
    return ", ".join(f"{df[k].iloc[0]}" for k in keys if k in df and df[k].map(str).nunique() == 1)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_latency(df: pd.DataFrame, out: Path, plt: Any) -> Path | None:
    """Normalized latency (s/token) vs request rate, one line per system (paper Fig. 12)."""
    y = "normalized_latency_s_per_token"
    if RATE not in df or y not in df:
        return None
    d = df[df[RATE].map(lambda r: math.isfinite(r) if isinstance(r, float) else False) & df[y].notna()]
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for system, g in d.groupby("system", sort=True):
        g = g.groupby(RATE)[y].mean().sort_index()  # mean over seeds / repeats
        ax.plot(g.index, g.values, marker="o", label=system)
    ctx = _context(df)
    ax.set(xlabel="Request rate (req/s)", ylabel="Normalized latency (s/token)", ylim=(0, None),
           xlim=(0, None), title="Normalized latency vs request rate" + (f"\n{ctx}" if ctx else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "normalized_latency.png")


def _bar_groups(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Mean of ``cols`` per (system, rate), rows ordered by system then rate."""
    keys = ["system", RATE] if RATE in df else ["system"]
    d = df[df[cols].notna().all(axis=1)]
    return d.groupby(keys, sort=True)[cols].mean().reset_index() if not d.empty else d


def _bar_label(row: pd.Series, multi_rate: bool) -> str:
    label = str(row["system"]).replace(", ", "\n")
    return f"{label}\n@ {row[RATE]:g} req/s" if multi_rate else label


def plot_memory(df: pd.DataFrame, out: Path, plt: Any) -> Path | None:
    """Time-averaged KV memory by category, stacked bars per system (paper Fig. 2)."""
    cols = [f"mem_{c}_ratio" for c in MEMORY_CATEGORIES]
    if not set(cols) <= set(df):
        return None
    d = _bar_groups(df, cols)
    if d.empty:
        return None
    multi_rate = RATE in d and d[RATE].nunique() > 1
    labels = [_bar_label(r, multi_rate) for _, r in d.iterrows()]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(d) + 2), 4.6))
    bottom = [0.0] * len(d)
    for cat, col in zip(MEMORY_CATEGORIES, cols):
        vals = (d[col] * 100).tolist()
        bars = ax.bar(labels, vals, bottom=bottom, color=MEM_COLORS[cat], label=MEM_LABELS[cat])
        ax.bar_label(bars, labels=[f"{v:.1f}" if v >= 3 else "" for v in vals], label_type="center",
                     fontsize=8)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(ylabel="KV cache slots (%, time-averaged)", ylim=(0, 105),
           title="KV cache usage by category" + (f"\n{_context(df)}" if _context(df) else ""))
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "memory_breakdown.png")


def plot_batched(df: pd.DataFrame, out: Path, plt: Any) -> Path | None:
    """Mean number of batched requests per system (paper Fig. 13); one bar group per rate."""
    col = "mean_batched_requests"
    if col not in df:
        return None
    d = _bar_groups(df, [col])
    if d.empty:
        return None
    rates = sorted(d[RATE].unique()) if RATE in d else [None]
    systems = sorted(d["system"].unique())
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rates) * len(systems) + 2), 4.4))
    for i, system in enumerate(systems):
        g = d[d["system"] == system]
        offset = (i - (len(systems) - 1) / 2) * width
        xs = [rates.index(r) + offset for r in (g[RATE] if RATE in g else [None])]
        bars = ax.bar(xs, g[col], width=width, label=system)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(rates)), [f"{r:g} req/s" if r is not None else "" for r in rates])
    ax.set(ylabel="Mean batched requests (per step)", ylim=(0, 1.25 * float(d[col].max()) or 1.0),
           title="Average number of batched requests" + (f"\n{_context(df)}" if _context(df) else ""))
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out / "batched_requests.png")


def plot_all(df: pd.DataFrame, out: Path) -> list[Path]:
    """Write the PNGs that the available columns allow; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fn in (plot_latency, plot_memory, plot_batched):
        path = fn(df, out, plt)
        if path is not None:
            paths.append(path)
        plt.close("all")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvlab.compare", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (or any tree of job dirs)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: the sweep dir)")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    df, _ = collect(args.sweep_dir)
    if df.empty:
        print(f"error: no job directories (metrics.json / .hydra/config.yaml) under {args.sweep_dir}",
              file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "compare.csv"
    df.to_csv(csv, index=False)
    print(csv)
    for p in plot_all(df, out):
        print(p)
    for w in provenance_warnings(find_jobs(args.sweep_dir), args.sweep_dir):
        print(f"warning: {w}", file=sys.stderr)
    bad = df[df["status"] != "ok"]
    for _, row in bad.iterrows():
        print(f"warning: job {row['job']}: {row['status']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
