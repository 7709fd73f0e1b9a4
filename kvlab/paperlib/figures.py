"""Draw every figure of the report from the tables (``tables.write_all``) and points."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kvlab.paperlib import plots_ablation as ab
from kvlab.paperlib import plots_bars as bars
from kvlab.paperlib.plots_latency import plot_sweeps

FIGURE_FILES = ("table1", "fig2", "fig12", "fig13", "fig14", "fig15", "fig16", "fig17",
                "fig18a", "fig18b", "fig19a", "fig19b")


def draw_all(points: pd.DataFrame, tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Write ``out/<name>.png`` for every name in :data:`FIGURE_FILES`; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    points = points.copy()
    points["panel"] = points["panel"].astype(str)
    paths = [bars.plot_table1(tables["table1"], out, plt), bars.plot_fig2(tables["fig2"], out, plt),
             bars.plot_fig13(tables["fig13"], out, plt), bars.plot_fig15(tables["fig15"], out, plt)]
    paths += [plot_sweeps(points, f, out, plt) for f in ("fig12", "fig14", "fig16", "fig17")]
    paths += [ab.plot_fig18a(out, plt),
              ab.plot_block_sweep(tables["fig18b"], "fig18b", "Fig. 18b: block size, vLLM OPT-13B", out, plt),
              ab.plot_fig19a(tables["fig19a"], out, plt),
              ab.plot_block_sweep(tables["fig19b"], "fig19b", "Fig. 19b: recompute vs swap, OPT-13B", out, plt)]
    return paths
