"""Running one workload through the engine for calibration and validation (no result files).

:func:`compose` builds the Hydra config of a list of overrides (as ``python -m kvlab.run`` would);
:func:`run_workload` replays its workload through an :class:`~kvlab.engine.LLMEngine`, optionally
on an executor that is already built (the real model loads once and serves every run), and returns
the metrics with the engine (its step and request records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str]) -> dict[str, Any]:
    """The resolved root config for ``overrides`` (fresh Hydra global state each call)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kvlab.config_check import as_plain

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = as_plain(hydra_compose(config_name="config", overrides=list(overrides)))
    GlobalHydra.instance().clear()
    return cfg


class StepRecorder:
    """An executor wrapper that records ``(step features, measured seconds)`` of every ``execute``
    (the step-level view of a real run: which terms of the cost model are off). Everything else
    is the wrapped executor's."""

    def __init__(self, inner: Any, block_rows: int = 0) -> None:
        self.inner = inner
        self.block_rows = block_rows
        self.steps: list[tuple[dict[str, float], float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def execute(self, step: Any) -> Any:
        from kvlab.executor.cost_calibrated import step_features

        out = self.inner.execute(step)
        self.steps.append((step_features(step.seqs, self.block_rows), float(out.duration_s)))
        return out


def block_rows_of(executor: Any) -> int:
    """The rows up to which ``executor``'s matmuls read GGUF blocks (``executor.weight_blocks``), 0 = none."""
    linear = getattr(getattr(executor, "model", None), "linear", None)
    return int(getattr(linear, "max_rows", 0) or 0)


def run_workload(cfg: dict[str, Any], executor: Any | None = None, *, desc: str = "requests",
                 show_progress: bool = False) -> dict[str, Any]:
    """Replay ``cfg``'s workload; returns {"metrics", "engine"}. Mutates ``executor``'s caches."""
    from kvlab.driver import replay
    from kvlab.engine import LLMEngine
    from kvlab.metrics import compute_metrics
    from kvlab.workloads import build_workload

    model, wl = cfg["model"], cfg["workload"]
    engine = LLMEngine(cfg, executor=executor)
    workload = build_workload(wl, seed=int(cfg.get("seed", 0)), vocab_size=int(model["vocab_size"]),
                              max_model_len=engine.max_model_len)
    replay(engine, workload.requests, show_progress=show_progress, ignore_eos=bool(wl.get("ignore_eos", True)),
           temperature=float(wl.get("temperature", 1.0)), seed=wl.get("sampling_seed"), desc=desc)
    metrics = compute_metrics(engine.request_records, engine.step_records,
                              kv_capacity_tokens=engine.kv_capacity_tokens, price_per_hour=0.0,
                              num_gpus=1, block_bytes=engine.block_bytes)
    return {"metrics": metrics, "engine": engine}
