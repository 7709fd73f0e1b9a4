"""Capacity: the request rate at which mean normalized latency crosses a threshold.

The paper reads capacity as the rate where the latency curve "explodes" and prints no threshold;
kvlab states one (``threshold_s_per_token`` in the experiment yaml) and interpolates linearly
between the last rate below it and the first rate above it. The saturated throughput (every
request at t=0; rows with ``rate == inf``) is reported beside it as a second, threshold-free view.
"""

from __future__ import annotations

import math

import pandas as pd

NL = "normalized_latency_s_per_token"


def bracket(rates: list[float], values: list[float], threshold: float
            ) -> tuple[list[tuple[float, float]], tuple[tuple[float, float], tuple[float, float]] | None]:
    """(points sorted by rate, missing values as inf; the first adjacent pair whose value goes from
    at most ``threshold`` to above it, or None)."""
    pts = sorted((r, math.inf if v is None or v != v else v) for r, v in zip(rates, values))
    return pts, next(((p0, p1) for p0, p1 in zip(pts, pts[1:]) if p0[1] <= threshold < p1[1]), None)


def crossing(rates: list[float], values: list[float], threshold: float) -> tuple[float, str]:
    """(capacity, note). ``note`` is "" for a bracketed crossing, ">" when every point is below
    (capacity is at least the largest rate), "<" when every point is above."""
    pts, pair = bracket(rates, values, threshold)
    if not pts:
        return math.nan, "no runs"
    if pair is not None:
        (r0, v0), (r1, v1) = pair
        if math.isinf(v1):
            return r0, ""
        return r0 + (threshold - v0) * (r1 - r0) / (v1 - v0), ""
    if pts[-1][1] <= threshold:
        return pts[-1][0], ">"
    return pts[0][0], "<"


def capacities(points: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per (figure, panel, system) of a sweep table: capacity (req/s) and its note."""
    rows = []
    for (fig, panel, system), g in points.groupby(["figure", "panel", "system"], sort=False):
        sat = g[g["rate"] == math.inf]
        g = g[g["rate"] < math.inf]
        cap, note = crossing(g["rate"].tolist(), g[NL].tolist(), threshold)
        rows.append({"figure": fig, "panel": panel, "system": system, "capacity": cap, "bound": note,
                     "saturated_throughput": float(sat["sat_throughput"].iloc[0]) if len(sat) else math.nan,
                     "threshold_s_per_token": threshold, "num_points": len(g)})
    return pd.DataFrame(rows)
