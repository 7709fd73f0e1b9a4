"""kvlab-vs-paper tables, one CSV per figure, from a run's ``points.csv`` / ``capacity.csv``.

Every table has kvlab's value beside the paper's (``paper`` column, NaN where the paper has no
number) and the paper number's tag (P/F printed, D digitized). Table 1 and Fig. 19a are pure cost-
model arithmetic and are computed here, without runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from kvlab.paperlib import numbers
from kvlab.paperlib.jobs import compose
from kvlab.paperlib.specs import load_spec

CATS = ("token_states", "reservation", "internal_frag", "external_frag")
GB = 1e9


def _sim(model: str, hardware: str):  # noqa: ANN202 - SimExecutor, imported lazily
    from kvlab.executor.sim import build_sim_executor

    return build_sim_executor(compose(["+experiment=paper_table1", f"model={model}", f"hardware={hardware}"]))


def table1() -> pd.DataFrame:
    rows = []
    for key, s in load_spec("table1")["setups"].items():
        ex = _sim(s["model"], s["hardware"])
        tp = ex.shape.tensor_parallel
        rows.append({"setup": key, "gpus": f"{tp}x {s['hardware']}",
                     "param_gb": ex.shape.param_bytes_per_gpu * tp / GB,
                     "paper_param_gb": numbers.value("table1", "param_gb", key),
                     "kv_gb": ex.kv_capacity_blocks(1) * ex.shape.kv_bytes_per_token_per_gpu * tp / GB,
                     "paper_kv_gb": numbers.value("table1", "kv_gb", key),
                     "kv_slots": ex.kv_capacity_blocks(1),
                     "paper_kv_slots": numbers.value("table1", "kv_slots", key)})
    df = pd.DataFrame(rows)
    df["slots_error_pct"] = 100 * (df["kv_slots"] / df["paper_kv_slots"] - 1)
    return df


def fig19a() -> pd.DataFrame:
    spec = load_spec("fig19")
    ex = _sim("opt-13b", "a100-40gb")
    tokens = int(spec["micro_tokens"])
    rec = ex.prefill_time_s(tokens) * 1e3
    rows = []
    for bs in spec["block_sizes"]:
        one = ex.swap_time_s(math.ceil(tokens / bs), bs) * 1e3
        for what, v in (("recompute", rec), ("swap_in", one), ("swap_out", one), ("swap_in_out", 2 * one)):
            rows.append({"block_size": bs, "op": what, "kvlab_ms": v, "tokens": tokens,
                         "paper_ms": numbers.value("fig19a", "time", "micro", what, bs)})
    return pd.DataFrame(rows)


def _saturated_row(points: pd.DataFrame, cap: pd.DataFrame, panel: str, system: str) -> pd.Series | None:
    g = points[(points["figure"] == "fig12") & (points["panel"] == panel) & (points["system"] == system)
               & (points["rate"] < math.inf)].sort_values("rate")
    c = cap[(cap["figure"] == "fig12") & (cap["panel"] == panel) & (cap["system"] == system)]
    if g.empty or c.empty:
        return None
    above = g[g["rate"] >= float(c["capacity"].iloc[0])]
    return (above if len(above) else g).iloc[0]


def fig2(points: pd.DataFrame, cap: pd.DataFrame) -> pd.DataFrame:
    spec = load_spec("fig2")
    rows = []
    for system in spec["systems"]:
        r = _saturated_row(points, cap, spec["source"]["panel"], system)
        for c in CATS:
            rows.append({"system": system, "category": c, "rate": None if r is None else r["rate"],
                         "kvlab_pct": math.nan if r is None else 100 * float(r[f"ss_mem_{c}_ratio"]),
                         "paper_pct": numbers.value("fig2", c, "", system)})
    return pd.DataFrame(rows)


def capacity_table(cap: pd.DataFrame, figure: str) -> pd.DataFrame:
    d = cap[cap["figure"] == figure].copy()
    spec = load_spec(figure)
    porder = {p: i for i, p in enumerate(spec["panels"])}
    sorder = {s: i for i, s in enumerate(spec["systems"])}
    d = d.assign(_p=d["panel"].map(porder), _s=d["system"].map(sorder)).sort_values(["_p", "_s"])
    d = d.drop(columns=["_p", "_s"])
    d["paper_capacity"] = [numbers.value(figure, "capacity", p, s) for p, s in zip(d["panel"], d["system"])]
    return d


def ratios(capt: pd.DataFrame, figure: str, base: str = "vllm") -> pd.DataFrame:
    """vLLM's capacity over every other system's, kvlab and paper (digitized), per panel."""
    rows = []
    for panel, g in capt.groupby("panel", sort=False):
        top = g[g["system"] == base]
        if top.empty:
            continue
        for r in g[g["system"] != base].itertuples():
            rows.append({"figure": figure, "panel": panel, "ratio": f"{base}/{r.system}",
                         "kvlab": float(top["capacity"].iloc[0]) / r.capacity if r.capacity else math.nan,
                         "kvlab_bounds": f"{top['bound'].iloc[0]}/{r.bound}".strip("/"),
                         "kvlab_saturated": (float(top["saturated_throughput"].iloc[0])
                                             / r.saturated_throughput),
                         "paper_digitized": float(top["paper_capacity"].iloc[0]) / r.paper_capacity})
    return pd.DataFrame(rows)


def fig13(points: pd.DataFrame) -> pd.DataFrame:
    d = points[points["figure"] == "fig13"]
    rows = [{"trace": r.panel, "at": r.tag_at, "rate": r.rate, "system": r.system,
             "kvlab": r.ss_mean_batched_requests, "kvlab_whole_run": r.mean_batched_requests,
             "paper": numbers.value("fig13", "batched_requests", r.panel, r.system)} for r in d.itertuples()]
    order = {s: i for i, s in enumerate(load_spec("fig13")["systems"])}
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_o"] = df["system"].map(order)
    return df.sort_values(["trace", "at", "_o"], ascending=[False, True, True]).drop(columns="_o")


def fig15(points: pd.DataFrame, cap: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for panel in load_spec("fig14")["panels"]:
        kind, k = ("beam", int(panel[4:])) if panel.startswith("beam") else ("parallel", int(panel[1:]))
        g = points[(points["figure"] == "fig14") & (points["panel"] == panel) & (points["system"] == "vllm")
                   & (points["rate"] < math.inf)].sort_values("rate")
        c = cap[(cap["figure"] == "fig14") & (cap["panel"] == panel) & (cap["system"] == "vllm")]
        below = g[g["rate"] <= float(c["capacity"].iloc[0])] if len(c) else g
        r = (below if len(below) else g).iloc[-1] if len(g) else None
        sg = points[(points["figure"] == "fig15_sharegpt") & (points["panel"] == panel)]
        for trace, row in (("alpaca", r), ("sharegpt", sg.iloc[0] if len(sg) else None)):
            rows.append({"trace": trace, "kind": kind, "k": k, "rate": None if row is None else row["rate"],
                         "kvlab_pct": math.nan if row is None else 100 * float(row["ss_sharing_saved_ratio"]),
                         "paper_pct": numbers.value("fig15", "sharing_saved", trace, kind, k)})
    return pd.DataFrame(rows)


def block_table(points: pd.DataFrame, figure: str) -> pd.DataFrame:
    d = points[points["figure"] == figure]
    rows = []
    for r in d.itertuples():
        pre = getattr(r, "tag_pre", None)
        series = pre if isinstance(pre, str) else "vllm"
        pfig = "fig19b" if figure == "fig19" else "fig18b"
        rows.append({"trace": r.panel, "series": series, "block_size": int(r.tag_bs), "rate": r.rate,
                     "kvlab": r.normalized_latency_s_per_token, "preemptions": r.num_preemptions,
                     "paper": numbers.value(pfig, "normalized_latency", r.panel, series, r.tag_bs)})
    return pd.DataFrame(rows).sort_values(["trace", "series", "block_size"]) if rows else pd.DataFrame()


def write_all(root: Path) -> dict[str, pd.DataFrame]:
    """Compute every table from ``root``'s points/capacity CSVs and write ``root/tables/*.csv``."""
    points = pd.read_csv(root / "points.csv")
    cap = pd.read_csv(root / "capacity.csv").fillna({"bound": ""})
    cap["panel"] = cap["panel"].astype(str)
    points["panel"] = points["panel"].astype(str)
    t: dict[str, pd.DataFrame] = {
        "table1": table1(), "fig19a": fig19a(), "fig2": fig2(points, cap), "fig13": fig13(points),
        "fig15": fig15(points, cap), "fig18b": block_table(points, "fig18"),
        "fig19b": block_table(points, "fig19"),
        "fig12_stability_capacity": cap[cap["figure"] == "fig12_stability"]}
    for fig in ("fig12", "fig14", "fig16", "fig17"):
        t[f"{fig}_capacity"] = capacity_table(cap, fig)
        t[f"{fig}_ratios"] = ratios(t[f"{fig}_capacity"], fig, "vllm_prefix" if fig == "fig16" else "vllm")
    out = root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for name, df in t.items():
        df.to_csv(out / f"{name}.csv", index=False)
    return t
