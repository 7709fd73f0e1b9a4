"""One experiment: config -> engine + workload -> replay -> metrics and record files.

Writes, into the output directory: ``metrics.json``, ``requests.csv``, ``steps.csv``, the
resolved ``config.yaml`` (so every result sits beside the config that made it) and
``manifest.json`` (commit, command, versions, machine, seeds, model hash: :mod:`kvlab.manifest`);
with ``record.blocks=true`` also ``blocks.jsonl.gz`` + ``blocks_meta.json``, block-map snapshots
for ``python -m kvlab.view`` (:mod:`kvlab.dashboard.recorder`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from kvlab.config_check import as_plain, check_config
from kvlab.dashboard.recorder import BlockRecorder
from kvlab.driver import replay
from kvlab.engine import LLMEngine
from kvlab.executor.device_monitor import device_metrics
from kvlab.manifest import model_provenance, write_manifest
from kvlab.metrics import compute_metrics
from kvlab.workloads import build_workload


def run_experiment(cfg: Any, out_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg`` and write its records; returns {"metrics", "engine", "workload", "samples"}."""
    started = time.time()
    cfg = as_plain(cfg)
    check_config(cfg)
    model = cfg["model"]
    provenance = model_provenance(model) if cfg["executor"].get("name") != "sim" else None
    max_len = int(cfg.get("kv", {}).get("max_model_len") or model["max_model_len"])
    wl_cfg = cfg["workload"]
    needs_tokenizer = wl_cfg.get("name") in ("file", "prompts")
    if not needs_tokenizer:  # validate the workload before any slow setup (model load)
        workload = build_workload(wl_cfg, seed=int(cfg.get("seed", 0)), vocab_size=int(model["vocab_size"]),
                                  max_model_len=max_len)
    recorder = _block_recorder(cfg)  # validated before the engine (and any model load)
    engine = LLMEngine(cfg)
    if recorder is not None:
        engine.stats_listeners.append(recorder)
    if needs_tokenizer:
        workload = build_workload(wl_cfg, seed=int(cfg.get("seed", 0)), vocab_size=int(model["vocab_size"]),
                                  max_model_len=engine.max_model_len,
                                  tokenizer=engine.tokenizer or _tokenizer_only(model))
    ignore_eos = bool(wl_cfg.get("ignore_eos", True))
    replay(engine, workload.requests, show_progress=bool(cfg.get("show_progress", True)),
           ignore_eos=ignore_eos, temperature=float(wl_cfg.get("temperature", 1.0)),
           seed=wl_cfg.get("sampling_seed"))
    if recorder is not None:
        engine.stats_listeners.remove(recorder)
        recorder.finish(engine)
    hw = cfg.get("hardware") or {}
    metrics = compute_metrics(
        engine.request_records, engine.step_records, kv_capacity_tokens=engine.kv_capacity_tokens,
        price_per_hour=float(hw.get("price_per_gpu_hour", hw.get("price_per_hour", 0.0)) or 0.0),
        num_gpus=int(model.get("tensor_parallel", 1) or 1),
        block_bytes=engine.block_bytes, warmup_s=float(wl_cfg.get("warmup_s", 0.0) or 0.0))
    metrics.update(_allocator_counters(engine))
    monitor = getattr(engine.executor, "monitor", None)  # the torch executor's DeviceMonitor
    metrics.update(device_metrics(getattr(monitor, "name", None), engine.step_records))
    precision = getattr(engine.executor, "precision", None)  # dtype/gemm chosen at run time, and why
    if precision is not None:
        metrics["precision"] = precision.as_dict()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    pd.DataFrame([r.as_dict() for r in engine.request_records]).to_csv(out / "requests.csv", index=False)
    pd.DataFrame([s.as_dict() for s in engine.step_records]).to_csv(out / "steps.csv", index=False)
    _write_config(cfg, out / "config.yaml")
    if recorder is not None:
        recorder.write(out)
    write_manifest(out, cfg, started=started, model=provenance,
                   extra={"entry_point": "kvlab.run", "device": metrics.get("device"),
                          "precision": metrics.get("precision")})
    samples = [] if engine.tokenizer is None else _samples(engine)
    return {"metrics": metrics, "engine": engine, "workload": workload, "samples": samples}


def _block_recorder(cfg: dict[str, Any]) -> BlockRecorder | None:
    """``record.blocks=true``: a :class:`BlockRecorder` for ``record.every_n_steps`` / ``record.max_mb``."""
    rec = cfg.get("record") or {}
    blocks = rec.get("blocks", False)
    if not isinstance(blocks, bool):
        raise ValueError(f"record.blocks={blocks!r}: must be true or false")
    if not blocks:
        return None
    unknown = set(rec) - {"blocks", "every_n_steps", "max_mb"}
    if unknown:
        raise ValueError(f"record.{sorted(unknown)[0]} is unknown; choose from: blocks, every_n_steps, max_mb")
    return BlockRecorder(rec.get("every_n_steps", 10), rec.get("max_mb", 20.0),
                         allocator=str(cfg["allocator"]["name"]))


def _tokenizer_only(model: dict[str, Any]) -> Any:
    """The model's tokenizer without its weights: lets the simulator replay text workloads
    (e.g. ``executor=sim`` on the default SmolLM2 prompts). None for weightless shapes."""
    if not model.get("checkpoint") or model.get("checkpoint") == "random":
        return None
    from kvlab.models.loader import checkpoint_dir, load_tokenizer

    path = checkpoint_dir(model)
    return load_tokenizer(path) if path is not None else None


def _allocator_counters(engine: LLMEngine) -> dict[str, Any]:
    stats = engine.allocator.stats()
    return {"prefix_query_tokens": stats.get("prefix_query_tokens", 0),
            "prefix_hit_tokens": stats.get("prefix_hit_tokens", 0),
            "num_blocks": engine.allocator.num_blocks, "block_size": engine.block_size}


def _samples(engine: LLMEngine, k: int = 3) -> list[tuple[str, str]]:
    """Up to ``k`` (prompt, output text) pairs of finished requests with distinct prompts (a
    workload that cycles through a prompt list finishes its repeats together)."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[int, ...]] = set()
    for req in engine.finished_requests:
        key = tuple(req.prompt_token_ids)
        if key in seen:
            continue
        seen.add(key)
        o = engine.make_output(req)
        prompt = req.prompt if req.prompt is not None else engine.tokenizer.decode(req.prompt_token_ids)
        out.append((prompt, o.outputs[0].text if o.outputs else ""))
        if len(out) == k:
            break
    return out


def _write_config(cfg: dict[str, Any], path: Path) -> None:
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(cfg), path)
