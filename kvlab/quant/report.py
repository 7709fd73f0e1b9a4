"""Outputs of the comparison: ``summary.csv``, the plots, and a markdown section for the docs.

Pure over the rows the command collected (one dict per scheme); nothing here runs a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

REQUIRED_COLUMNS = ("scheme", "bytes_per_token", "capacity_tokens", "ppl", "ppl_delta_pct", "kl_mean",
                    "top1_agreement", "greedy_match_tokens", "passkey_accuracy", "output_throughput")
# Targets of issue 12: perplexity increase (percent) per scheme, and the simulator's int8 capacity ratio.
PPL_TARGETS_PCT = {"int8": 0.5, "fp8_e4m3": 0.5, "int4": 3.0, "kivi2": 8.0}
SIM_CAPACITY_TARGET = ("int8", 1.8)
BEGIN, END = "<!-- quant-results:begin -->", "<!-- quant-results:end -->"


def add_relative_columns(df: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Columns relative to the baseline row: ppl_delta_pct, capacity and throughput ratios."""
    df = df.copy()
    base = df[df["scheme"] == baseline]
    if base.empty:
        raise ValueError(f"no {baseline!r} row: the relative columns need the unquantized baseline")
    b = base.iloc[0]
    df["ppl_delta_pct"] = (df["ppl"] / b["ppl"] - 1.0) * 100.0
    for col in ("capacity_tokens", "output_throughput", "sim_capacity_tokens", "sim_output_throughput"):
        if col in df:
            df[col.replace("_tokens", "").replace("output_", "") + "_ratio"] = df[col] / b[col]
    return df


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in REQUIRED_COLUMNS if c in df]
    return df[first + [c for c in df.columns if c not in first]]


def write_summary(rows: Sequence[Mapping[str, Any]], out: Path) -> pd.DataFrame:
    """``summary.csv`` (one row per scheme, :data:`REQUIRED_COLUMNS` first); returns the frame."""
    df = order_columns(add_relative_columns(pd.DataFrame(list(rows))))
    df.to_csv(out / "summary.csv", index=False)
    return df


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of points no other point beats on both (lower x AND lower y), sorted by x."""
    idx = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for x2, y2 in zip(xs, ys))
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: xs[i])


def plot_all(df: pd.DataFrame, out: Path) -> list[Path]:
    """``pareto.png`` (accuracy vs bytes per token) and ``serving.png`` (throughput and batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, label in ((axes[0], "ppl_delta_pct", "perplexity increase (%)"),
                           (axes[1], "kl_mean", "mean KL vs unquantized (nats)")):
        x, y = list(df["bytes_per_token"]), [max(v, 0.0) if col == "kl_mean" else v for v in df[col]]
        ax.scatter(x, y)
        for xi, yi, s in zip(x, y, df["scheme"]):
            ax.annotate(s, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(x, y)
        ax.plot([x[i] for i in front], [y[i] for i in front], "--", color="gray", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("KV bytes per token (SmolLM2, all layers)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("KV-cache formats: accuracy vs memory (SmolLM2-135M)")
    fig.tight_layout()
    paths.append(out / "pareto.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    panels = [("output_throughput", "CPU, SmolLM2: output tok/s"), ("max_batch", "CPU, SmolLM2: largest batch"),
              ("sim_output_throughput", "sim, paper scale: output tok/s"),
              ("sim_max_batch", "sim, paper scale: largest batch")]
    panels = [p for p in panels if p[0] in df]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], panels):
        ax.bar(df["scheme"], df[col])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.tight_layout()
    paths.append(out / "serving.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _fmt(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt.format(v)


def markdown(df: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """The generated results section: the table, then the targets with measured values."""
    cols = [("scheme", "{}"), ("bytes_per_token", "{:.0f}"), ("capacity_tokens", "{:.0f}"), ("ppl", "{:.4f}"),
            ("ppl_delta_pct", "{:+.3f}"), ("kl_mean", "{:.2e}"), ("top1_agreement", "{:.4f}"),
            ("greedy_match_tokens", "{:.1f}"), ("passkey_accuracy", "{:.2f}"), ("max_batch", "{:.0f}"),
            ("num_preemptions", "{:.0f}"), ("output_throughput", "{:.1f}"), ("decode_step_ms", "{:.0f}"),
            ("sim_bytes_per_token", "{:.0f}"), ("sim_capacity_tokens", "{:.0f}"), ("sim_capacity_ratio", "{:.2f}"),
            ("sim_max_batch", "{:.0f}"), ("sim_num_preemptions", "{:.0f}"), ("sim_output_throughput", "{:.0f}"),
            ("sim_throughput_ratio", "{:.2f}"), ("sim_p99_tpot_ms", "{:.1f}")]
    cols = [c for c in cols if c[0] in df]
    lines = [f"Generated by `{meta.get('command', 'python -m kvlab.quant')}` ({meta.get('mode')}, "
             f"{meta.get('date')}; load average {meta.get('load')} on {meta.get('cpu')}). "
             f"Perplexity text: {meta.get('text')}; {meta.get('ppl_tokens')} scored tokens.", "",
             "| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], f) for c, f in cols) + " |")
    lines += ["", "Targets (issue 12):", "", "| target | measured | met |", "|---|---|---|"]
    by = {r["scheme"]: r for _, r in df.iterrows()}
    for s, lim in PPL_TARGETS_PCT.items():
        got = by[s]["ppl_delta_pct"] if s in by else float("nan")
        met = "not run" if s not in by else ("yes" if got <= lim else "no")
        lines.append(f"| {s}: perplexity +{lim}% or less | {_fmt(got, '{:+.3f}%')} | {met} |")
    s, lim = SIM_CAPACITY_TARGET
    got = by[s]["sim_capacity_ratio"] if s in by and "sim_capacity_ratio" in df else float("nan")
    met = "not run" if s not in by else ("yes" if got >= lim else "no")
    lines.append(f"| {s}: >= {lim}x the unquantized tokens in the simulator ({meta.get('sim')}) | "
                 f"{_fmt(got, '{:.3f}x')} | {met} |")
    if "capacity_vs_budget_pct" in df:
        worst = float(df["capacity_vs_budget_pct"].abs().max())
        lines.append(f"| capacity within 1% of budget / bytes per token (CPU run, every scheme) | "
                     f"worst {worst:.2f}% | {'yes' if worst <= 1.0 else 'no'} |")
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, section: str) -> None:
    """Replace the text between the BEGIN/END markers of ``doc`` with ``section``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no {BEGIN} ... {END} markers")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{section}{END}", text, flags=re.S)
    doc.write_text(new)
