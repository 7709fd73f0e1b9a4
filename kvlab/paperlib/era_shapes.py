"""Paper-era diagnostics, the datasets' shapes: how far each Fig. 12 capacity moves when the synthetic
ShareGPT/Alpaca lengths take another shape that the paper's published means and Fig. 11 allow.

Each variant of ``workload.length_shape`` (:data:`kvlab.workloads.lengths.LENGTH_SHAPES`) re-reads
one thing Fig. 11 leaves open (ShareGPT's output tail past 1023 tokens, Alpaca's near-zero output
peak) and keeps both published means. :mod:`kvlab.paperlib.era_sensitivity` runs every row with each
variant of its dataset in the fixed-count reading, like its other knobs, and FasterTransformer's rows
also in the prediction's own reading (the paper's traces): request-level batching is what the tails
decide. Nothing here changes the prediction: the base shapes stay the default.
"""

from __future__ import annotations

import pandas as pd

from kvlab.paperlib import era
from kvlab.paperlib.specs import Job
from kvlab.workloads.lengths import LENGTH_SHAPES

# every non-base variant of each synthetic dataset; a panel runs its own dataset's variants
SHAPES: tuple[str, ...] = tuple(v for d in LENGTH_SHAPES.values() for v in d if v != "base")
PREDICTION_CSV = "sensitivity_shapes_ft.csv"


def describe(shape: str) -> tuple[str, str]:
    """(what, value) cells of the diagnostics table for a shape variant."""
    ds = next(d for d, v in LENGTH_SHAPES.items() if shape in v)
    return f"synthetic {ds} lengths", f"`{shape}`: {LENGTH_SHAPES[ds][shape][0]}"


def shape_jobs(shapes: tuple[str, ...], panels: str, num_requests: int | None, reading: str,
               systems: set[str] | None = None) -> list[Job]:
    """The era jobs of ``panels`` (``systems``: all if None) once per shape of their own dataset, read
    ``reading``; the shape (and a non-fixed reading) tag each job, so each has its own run directory."""
    out = []
    for v in shapes:
        for j in era.jobs(panels, num_requests, reading):
            if v in LENGTH_SHAPES.get(j.override("workload"), {}) and (systems is None or j.system in systems):
                j.overrides = [*j.overrides, f"workload.length_shape={v}"]
                j.tags = {"length_shape": v, **({"reading": reading} if reading != "fixed" else {})}
                out.append(j)
    return out


def prediction_jobs(shapes: tuple[str, ...], panels: str, num_requests: int | None) -> list[Job]:
    """FasterTransformer's rows on the paper's traces (the prediction's reading), per shape."""
    return shape_jobs(shapes, panels, num_requests, "paper_trace", {"ft"})


def prediction_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Capacity and error per (shape, panel) of :func:`prediction_jobs`' rows."""
    cols = ["value", "panel", "system", "era_capacity", "paper", "era_error_pct"]
    parts = [era.capacity_table(g, None, "paper_trace").assign(value=v)
             for v, g in rows.groupby("tag_length_shape")] if len(rows) else []
    return (pd.concat(parts, ignore_index=True)[cols].sort_values(["value", "panel"], ignore_index=True)
            if parts else pd.DataFrame(columns=cols))


def shape_spread(sens: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Per (panel, system): the error against the paper with the base shapes and with each variant of
    its dataset's shape, the lowest and highest, whether they bracket the paper (low <= 0 <= high: a
    shape between them would land on the paper's number) and the shapes that land within 25%."""
    shapes = sens[sens["knob"] == "length_shape"] if "knob" in sens else sens
    out = []
    for (panel, system), g in shapes.groupby(["panel", "system"], sort=True):
        b = base[(base["panel"] == panel) & (base["system"] == system)]["era_error_pct"]
        errs = {"base": float(b.iloc[0]) if len(b) else float("nan"),
                **{str(r.value): float(r.era_error_pct) for r in g.itertuples()}}
        vals = [e for e in errs.values() if e == e]
        out.append({"panel": panel, "system": system, **{f"err_{k}": e for k, e in errs.items()},
                    "low": min(vals), "high": max(vals), "brackets_paper": min(vals) <= 0 <= max(vals),
                    "within_25_with": ", ".join(k for k, e in errs.items() if abs(e) <= 25)})
    return pd.DataFrame(out)


def _ft_cells(t: pd.DataFrame) -> str:
    return ", ".join(f"({r.panel}) {r.low:+.0f}% to {r.high:+.0f}% (within 25%: {r.within_25_with or 'none'}"
                     + ("; the range brackets the paper)" if r.brackets_paper and not r.within_25_with else ")")
                     for r in t.itertuples())


def shape_lines(sens: pd.DataFrame, base: pd.DataFrame, prediction: pd.DataFrame | None = None,
                predicted: pd.DataFrame | None = None) -> list[str]:
    """The report's paragraph on the shape variants: FasterTransformer's spread against the others',
    then (``prediction``: :func:`prediction_table`, ``predicted``: the prediction's own capacity table)
    FasterTransformer's rows on the paper's traces."""
    t = shape_spread(sens, base)
    if t.empty:
        return []
    ft, rest = t[t["system"] == "ft"], t[t["system"] != "ft"]
    width = rest["high"] - rest["low"]
    lines = ["Shapes (fixed-count reading): across the base and its dataset's variants, FasterTransformer's "
             f"error runs {_ft_cells(ft)}; the vLLM and Orca rows move by a median {width.median():.0f} and at "
             f"most {width.max():.0f} points. Request-level batching reads the tails (a batch lasts as long as "
             "its longest output; a short request's wait is divided by its few tokens), so where another "
             "shape lands or the range brackets the paper, the published means and shapes leave "
             "FasterTransformer's capacity open; the real datasets would decide it.", ""]
    if prediction is not None and len(prediction) and predicted is not None:
        pft = predicted[predicted["system"] == "ft"][["panel", "system", "era_error_pct"]]
        p = shape_spread(prediction, pft)
        by = prediction.pivot(index="panel", columns="value", values="era_error_pct")
        cells = "; ".join(f"`{v}` " + ", ".join(f"({k}) {e:+.0f}%" for k, e in by[v].dropna().items())
                          for v in by.columns)
        lines += ["FasterTransformer on the paper's traces (the prediction's reading; "
                  f"`results/paper/era2023/{PREDICTION_CSV}`): {cells}. Ranges with the base: {_ft_cells(p)}. "
                  "These are not adopted: a shape picked now would be picked by the figure being predicted.",
                  ""]
    return lines
