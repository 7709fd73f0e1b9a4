"""``best=<sweep dir>``: pick the configuration that won a finished sweep and turn it into overrides.

The sweep is read with :func:`kvlab.compare.collect` (each job's ``metrics.json`` plus its
``config.yaml`` / ``.hydra/config.yaml``). Jobs are grouped into *systems* (the config values
that vary across the sweep, except request rate and seeds, exactly as ``kvlab.compare`` labels
them); the metric is averaged per system over its jobs (rates, seeds) and the best mean wins.

What is carried over: the winner's ``allocator``, ``scheduler`` and ``kv_quant`` groups — the
memory-management policy and KV format the sweep measured (a sweep over ``kv_quant=none,int8,...``
picks a scheme like any other key). The served model stays the one configured for serving, except when
the winning job itself ran the real model (``executor=torch``): then its model and dtype are
served too. A simulator sweep (``executor=sim`` on a paper model such as OPT-13B) thus applies
its winning allocator/scheduler settings to the served model; ``allocator.num_blocks`` is then
dropped, because a block count sized for a simulated GPU means nothing here. Keys set on the
command line always win over the sweep's.

A ``python -m kvlab.quant`` results directory (its ``summary.csv``, one row per scheme) is a sweep
over schemes with accuracy columns: each scheme is a system, the metric is any summary column
(``output_throughput``, ``sim_output_throughput``, ``capacity_tokens`` ...), and
``best.max_ppl_delta_pct`` drops the schemes whose perplexity rose more than that before the pick.
Only ``kv_quant`` is carried over from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlab.compare import collect, load_job

CARRIED_GROUPS = ("allocator", "scheduler", "kv_quant")


@dataclass
class BestConfig:
    system: str
    job: str
    value: float
    metric: str
    row: dict[str, Any]  # the winning job's flattened config and metrics
    table: list[tuple[str, float, int]]  # (system, mean metric, jobs) for every system, best first
    real_model: bool  # the winning job ran the real model (executor=torch)

    def summary(self) -> str:
        lines = [
            f"best: {self.system} wins on {self.metric} = {self.value:.4g} (mean over its jobs; e.g. job "
            f"{self.job})"
        ]
        lines += [
            f"  {'*' if s == self.system else ' '} {v:12.4g}  ({n} jobs)  {s}" for s, v, n in self.table
        ]
        if "scheme" in self.row:
            lines.append("note: a kvlab.quant comparison; only the KV format (kv_quant) is applied")
        elif not self.real_model:
            lines.append(
                f"note: the sweep ran executor={self.row.get('executor.name')} on model "
                f"{self.row.get('model.name')}; only its allocator/scheduler/kv_quant settings are applied, "
                "to the model configured for serving"
            )
        return "\n".join(lines)


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def pick_best(sweep_dir: str | Path, metric: str = "output_throughput", mode: str = "max",
              max_ppl_delta_pct: float | None = None) -> BestConfig:
    """The winning system of a sweep (or scheme of a kvlab.quant results dir). Raises ``ValueError``
    naming what is missing."""
    if mode not in ("max", "min"):
        raise ValueError(f"best.mode must be max or min, got {mode!r}")
    path = Path(sweep_dir)
    if not path.is_dir():
        raise ValueError(f"best: {path} is not a directory")
    if (path / "summary.csv").is_file() and (path / "runs").is_dir():
        return _pick_scheme(path, metric, mode, max_ppl_delta_pct)
    if max_ppl_delta_pct is not None:
        raise ValueError(f"best.max_ppl_delta_pct needs a kvlab.quant results dir (summary.csv); {path} is a sweep")
    df, _ = collect(path)
    if df.empty:
        raise ValueError(f"best: no job directories (metrics.json + config) under {path}")
    if metric not in df:
        numeric = [c for c in df.columns if c not in ("system", "job", "status") and "." not in c]
        raise ValueError(f"best: metric {metric!r} is not in the sweep; available: {', '.join(numeric)}")
    ok = df[(df["status"] == "ok") & df[metric].notna()]
    if ok.empty:
        raise ValueError(f"best: no finished job has {metric!r}")
    means = ok.groupby("system")[metric].agg(["mean", "count"])
    means = means.sort_values("mean", ascending=(mode == "min"))
    system = str(means.index[0])
    jobs = ok[ok["system"] == system]
    row_idx = jobs[metric].idxmax() if mode == "max" else jobs[metric].idxmin()
    row = {k: v for k, v in ok.loc[row_idx].to_dict().items() if _present(v)}
    cfg, _ = load_job(path / str(row["job"]), path)  # exact types (pandas turns ints with gaps into floats)
    row.update({k: v for k, v in cfg.items() if k not in ("job", "status")})
    return BestConfig(
        system,
        str(row.get("job")),
        float(means["mean"].iloc[0]),
        metric,
        row,
        [(str(s), float(r["mean"]), int(r["count"])) for s, r in means.iterrows()],
        real_model=row.get("executor.name") == "torch",
    )


def _pick_scheme(path: Path, metric: str, mode: str, max_ppl_delta_pct: float | None) -> BestConfig:
    """The best scheme of a ``python -m kvlab.quant`` results dir (see the module docstring)."""
    import pandas as pd

    df = pd.read_csv(path / "summary.csv")
    if metric not in df:
        numeric = [c for c in df.columns if c != "scheme" and pd.api.types.is_numeric_dtype(df[c])]
        raise ValueError(f"best: metric {metric!r} is not in {path / 'summary.csv'}; available: {', '.join(numeric)}")
    ok = df[df[metric].notna()]
    if max_ppl_delta_pct is not None:
        ok = ok[ok["ppl_delta_pct"] <= float(max_ppl_delta_pct)]
        if ok.empty:
            raise ValueError(f"best: no scheme has ppl_delta_pct <= {max_ppl_delta_pct} in {path}")
    ok = ok.sort_values(metric, ascending=(mode == "min"))
    top = ok.iloc[0]
    system = f"kv_quant={top['scheme']}"
    row = {k: v for k, v in top.to_dict().items() if _present(v)}
    row["kv_quant.name"] = str(top["scheme"])
    return BestConfig(system, str(top["scheme"]), float(top[metric]), metric, row,
                      [(f"kv_quant={r['scheme']}", float(r[metric]), 1) for _, r in ok.iterrows()],
                      real_model=False)


def _hydra_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if s.startswith("[") or s.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def best_overrides(best: BestConfig, cli_overrides: list[str]) -> list[str]:
    """Hydra overrides that select the winner's groups; keys the command line sets are left out."""
    cli_keys = {o.split("=", 1)[0].lstrip("+~") for o in cli_overrides}
    groups = list(CARRIED_GROUPS) + (["model"] if best.real_model else [])
    out: list[str] = []
    for group in groups:
        if group in cli_keys or f"{group}.name" not in best.row:
            continue
        out.append(f"{group}={best.row[f'{group}.name']}")
        for key, v in best.row.items():
            if not key.startswith(group + ".") or key == f"{group}.name" or key in cli_keys:
                continue
            if key == "allocator.num_blocks" and not best.real_model:
                continue
            out.append(f"++{key}={_hydra_value(v)}")
    if best.real_model and "dtype" in best.row and "dtype" not in cli_keys:
        out.append(f"dtype={_hydra_value(best.row['dtype'])}")
    return out
