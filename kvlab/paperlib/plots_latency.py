"""Latency-vs-rate figures (paper Figs. 12, 14, 16, 17): one panel per workload/model setup, one
line per system; the paper's digitized capacities are drawn as dashed vertical lines in the
system's colour, kvlab's threshold as a dotted horizontal line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from kvlab.paperlib import numbers
from kvlab.paperlib.specs import load_spec, system_info

NL = "normalized_latency_s_per_token"
YMAX = 1.0  # the paper clips its curves at 1.0 s/token too


def plot_sweeps(points: pd.DataFrame, figure: str, out: Path, plt: Any) -> Path:
    spec = load_spec(figure)
    panels = list(spec["panels"].items())
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.7 * nrows), squeeze=False)
    thr = float(spec["threshold_s_per_token"])
    for ax, (panel, p) in zip(axes.flat, panels):
        d = points[(points["figure"] == figure) & (points["panel"].astype(str) == panel)
                   & (points["rate"] < math.inf)]
        xmax = 0.0
        for system in spec["systems"]:
            info = system_info(system)
            g = d[d["system"] == system].sort_values("rate")
            if len(g):
                y = g[NL].clip(upper=YMAX * 1.05)
                ax.plot(g["rate"], y, marker=info["marker"], color=info["color"],
                        label=f"kvlab {info['label']}")
                xmax = max(xmax, float(g["rate"].max()))
            pc = numbers.value(figure, "capacity", panel, system)
            if not math.isnan(pc):
                ax.axvline(pc, color=info["color"], ls="--", lw=1, alpha=0.7)
                xmax = max(xmax, pc)
        ax.axhline(thr, color="k", ls=":", lw=1)
        ax.set(title=f"({panel}) {p['label']}", xlabel="Request rate (req/s)",
               ylabel="Normalized latency (s/token)", ylim=(0, YMAX * 1.08), xlim=(0, xmax * 1.05 or 1))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="gray", ls="--"), Line2D([], [], color="k", ls=":")]
    labels += ["paper capacity (digitized at 0.5 s/token)", f"kvlab threshold {thr} s/token"]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.06, 1, 1))
    path = out / f"{figure}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
