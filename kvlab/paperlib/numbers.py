"""The paper's numbers (``paper/paper_numbers.csv``): every value kvlab is compared against,
with its figure, panel, system, the tag from vllm-paper.md (P printed in the text, F printed in a
figure, D digitized from a plot) and ``kind`` (printed | digitized)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

NUMBERS_CSV = Path(__file__).resolve().parents[2] / "paper" / "paper_numbers.csv"


@lru_cache(maxsize=1)
def load() -> pd.DataFrame:
    df = pd.read_csv(NUMBERS_CSV, dtype={"panel": str, "system": str})
    return df.fillna({"panel": "", "system": "", "note": ""})


def select(figure: str, metric: str | None = None, panel: str | None = None) -> pd.DataFrame:
    df = load()
    df = df[df["figure"] == figure]
    if metric is not None:
        df = df[df["metric"] == metric]
    if panel is not None:
        df = df[df["panel"] == panel]
    return df


def capacity_map(figure: str) -> dict[tuple[str, str], float]:
    """{(panel, system): digitized capacity in req/s} for a latency figure."""
    d = select(figure, "capacity")
    return {(r.panel, r.system): float(r.value) for r in d.itertuples()}


def value(figure: str, metric: str, panel: str = "", system: str = "", x: float | None = None) -> float:
    """One paper number, NaN if absent."""
    d = select(figure, metric)
    d = d[(d["panel"] == panel) & (d["system"] == system)]
    if x is not None:
        d = d[d["x"].astype(float) == float(x)]
    return float(d["value"].iloc[0]) if len(d) else float("nan")


def tag(figure: str, metric: str) -> str:
    """The source tags of a figure's metric, e.g. "F" or "D" (joined if mixed)."""
    return "/".join(sorted(set(select(figure, metric)["tag"])))
