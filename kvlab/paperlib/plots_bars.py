"""Bar figures: Table 1 (KV slots), Fig. 2 (memory categories, stacked), Fig. 13 (batched
requests) and Fig. 15 (sharing savings); kvlab's bars beside the paper's, hatched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kvlab.paperlib.specs import system_info

CAT_STYLE = {"token_states": ("#2ca02c", "Token states"), "reservation": ("#ff7f0e", "Reservation"),
             "internal_frag": ("#d62728", "Internal frag."),
             "external_frag": ("#9e9e9e", "External frag. & others")}


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_table1(t: pd.DataFrame, out: Path, plt: Any) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = np.arange(len(t))
    a = ax.bar(x - 0.2, t["kv_slots"] / 1e3, 0.4, label="kvlab (simulator arithmetic)", color="#1f77b4")
    b = ax.bar(x + 0.2, t["paper_kv_slots"] / 1e3, 0.4, label="paper Table 1 [P]", color="#bbbbbb",
               hatch="//")
    ax.bar_label(a, fmt="%.1fK", fontsize=8)
    ax.bar_label(b, fmt="%.1fK", fontsize=8)
    ax.set_xticks(x, [f"{s}\n{g}" for s, g in zip(t["setup"], t["gpus"])])
    ax.set(ylabel="Max. # KV cache slots (thousand tokens)", title="Table 1: KV cache token slots")
    ax.legend(fontsize=8)
    return _save(fig, out / "table1.png", plt)


def plot_fig2(t: pd.DataFrame, out: Path, plt: Any) -> Path:
    systems = list(dict.fromkeys(t["system"]))
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    labels, xs = [], []
    for i, s in enumerate(systems):
        for j, (col, who) in enumerate((("kvlab_pct", "kvlab"), ("paper_pct", "paper"))):
            x = i * 2.6 + j * 1.05
            bottom = 0.0
            d = t[t["system"] == s].set_index("category")
            for cat, (color, name) in CAT_STYLE.items():
                v = float(d.loc[cat, col]) if cat in d.index else 0.0
                v = 0.0 if v != v else v
                ax.bar(x, v, bottom=bottom, color=color, hatch="//" if who == "paper" else None,
                       label=name if (i, j) == (0, 0) else None, edgecolor="white")
                if v >= 4:
                    ax.text(x, bottom + v / 2, f"{v:.1f}", ha="center", va="center", fontsize=7)
                bottom += v
            xs.append(x)
            labels.append(f"{system_info(s)['label'].replace(' (', chr(10) + '(')}\n{who}")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set(ylabel="KV cache usage (%)", ylim=(0, 105),
           title="Fig. 2: KV memory by category, OPT-13B ShareGPT (hatched: paper [F])")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "fig2.png", plt)


def plot_fig13(t: pd.DataFrame, out: Path, plt: Any) -> Path:
    traces = list(dict.fromkeys(t["trace"]))
    fig, axes = plt.subplots(1, len(traces), figsize=(6.0 * len(traces), 4.2), squeeze=False)
    for ax, trace in zip(axes.flat, traces):
        d = t[t["trace"] == trace]
        systems = list(dict.fromkeys(d["system"]))
        x = np.arange(len(systems))
        series = [(f"kvlab @ {r:.3g} req/s ({at.replace('_', ' ')})", d[d["at"] == at].set_index("system"),
                   "kvlab") for at, r in d.groupby("at")["rate"].first().items()]
        series.append(("paper [F]", d[d["at"] == "paper_rate"].set_index("system"), "paper"))
        w = 0.8 / len(series)
        for k, (name, dd, col) in enumerate(series):
            vals = [float(dd.loc[s, col]) if s in dd.index else 0.0 for s in systems]
            bars = ax.bar(x + (k - (len(series) - 1) / 2) * w, vals, w, label=name,
                          hatch="//" if col == "paper" else None, color=None if col != "paper" else "#bbbbbb")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, [system_info(s)["label"] for s in systems], fontsize=8)
        ax.set(ylabel="# batched requests (mean over steps)", title=f"Fig. 13: OPT-13B, {trace}")
        ax.legend(fontsize=7)
    return _save(fig, out / "fig13.png", plt)


def plot_fig15(t: pd.DataFrame, out: Path, plt: Any) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for ax, kind in zip(axes, ("parallel", "beam")):
        d = t[t["kind"] == kind]
        ks = sorted(d["k"].unique())
        x = np.arange(len(ks))
        combos = [("alpaca", "kvlab_pct", None), ("alpaca", "paper_pct", "//"),
                  ("sharegpt", "kvlab_pct", None), ("sharegpt", "paper_pct", "//")]
        for k, (trace, col, hatch) in enumerate(combos):
            dd = d[d["trace"] == trace].set_index("k")
            vals = [float(dd.loc[v, col]) if v in dd.index else np.nan for v in ks]
            name = f"{'kvlab' if col == 'kvlab_pct' else 'paper'} {trace}"
            bars = ax.bar(x + (k - 1.5) * 0.2, np.nan_to_num(vals), 0.2, label=name, hatch=hatch,
                          color=["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78"][k])
            ax.bar_label(bars, labels=[f"{v:.1f}" if v == v else "" for v in vals], fontsize=7)
        ax.set_xticks(x, [str(k) for k in ks])
        ax.set(xlabel="# output sequences" if kind == "parallel" else "Beam width",
               ylabel="Memory saving (%)",
               title=f"Fig. 15: {kind} {'sampling' if kind == 'parallel' else 'search'} (hatched: paper)")
        ax.legend(fontsize=7)
    return _save(fig, out / "fig15.png", plt)
