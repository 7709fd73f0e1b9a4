"""Ablation figures: Fig. 18a (kernel latency: the paper's bars only, kvlab needs a GPU),
Fig. 18b (block size), Fig. 19a (swap vs recompute microbenchmark), Fig. 19b (end-to-end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kvlab.paperlib import numbers


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fig18a(out: Path, plt: Any) -> Path:
    d = numbers.select("fig18a", "kernel_latency")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for series, g in d.groupby("system"):
        ax.plot(g["x"].astype(float), g["value"], marker="o", ls="--" if series.startswith("ft") else "-",
                label=f"paper [D] {series.replace('_', ' ')}")
    ax.text(0.5, 0.55, "kvlab: not measured\n(needs a GPU; no GPU run yet)", transform=ax.transAxes,
            ha="center", fontsize=11, color="#d62728", bbox={"fc": "white", "ec": "#d62728"})
    ax.set(xlabel="Context length (tokens)", ylabel="Attention kernel latency (us)",
           title="Fig. 18a: attention kernel latency (paper only)", xscale="log", xticks=[64, 128, 256])
    ax.set_xticklabels(["64", "128", "256"])
    ax.legend(fontsize=7)
    return _save(fig, out / "fig18a.png", plt)


def plot_block_sweep(t: pd.DataFrame, name: str, title: str, out: Path, plt: Any) -> Path:
    traces = list(dict.fromkeys(t["trace"])) or ["sharegpt"]
    fig, axes = plt.subplots(1, len(traces), figsize=(6.0 * len(traces), 4.0), squeeze=False)
    for ax, trace in zip(axes.flat, traces):
        d = t[t["trace"] == trace]
        for i, (series, g) in enumerate(d.groupby("series")):
            c = f"C{i}"
            ax.plot(g["block_size"], g["kvlab"], marker="o", color=c,
                    label=f"kvlab {series} @ {g['rate'].iloc[0]:.3g} req/s")
            ax.plot(g["block_size"], g["paper"], marker="x", ls="--", color=c, alpha=0.7,
                    label=f"paper [D] {series}")
        ax.set(xscale="log", xlabel="Block size (tokens)", ylabel="Normalized latency (s/token)",
               title=f"{title}: {trace}", yscale="log")
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64, 128, 256], ["1", "2", "4", "8", "16", "32", "64", "128", "256"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / f"{name}.png", plt)


def plot_fig19a(t: pd.DataFrame, out: Path, plt: Any) -> Path:
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    for i, (op, g) in enumerate(t.groupby("op", sort=False)):
        ax.plot(g["block_size"], g["kvlab_ms"], marker="o", color=f"C{i}", label=f"kvlab {op.replace('_', ' ')}")
        ax.plot(g["block_size"], g["paper_ms"], marker="x", ls="--", color=f"C{i}", alpha=0.7,
                label=f"paper [D] {op.replace('_', ' ')}")
    ax.set(xscale="log", yscale="log", xlabel="Block size (tokens)", ylabel="Time (ms, log scale)",
           title=f"Fig. 19a: swap vs recompute, OPT-13B, {int(t['tokens'].iloc[0])} tokens\n"
                 "(kvlab cost model: swap in = swap out, lines overlap)")
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xticks([1, 2, 4, 8, 16, 32, 64, 128, 256], ["1", "2", "4", "8", "16", "32", "64", "128", "256"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "fig19a.png", plt)
