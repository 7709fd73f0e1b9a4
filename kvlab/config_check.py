"""Fail fast on bad configuration: every group name and option is checked before any work.

Hydra already rejects unknown group choices (``model=foo`` lists the available files). This
module checks what Hydra cannot: option values inside a group, by building the allocator and
the scheduler on a tiny pool (cheap, and it reuses their own validation, so the rules live in one
place), and the executor name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvlab.config import KVConfig, TorchOptions, to_plain
from kvlab.kv_quant_format import KVQuantConfig

EXECUTOR_MODULES = {
    "sim": "kvlab.executor.sim",
    "torch": "kvlab.executor.torch_runner",
    "auto": "kvlab.executor.auto",
}


def as_plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, resolved ``dict`` copy of a DictConfig or mapping (:func:`kvlab.config.to_plain`)."""
    return dict(to_plain(cfg))


def _require(cfg: Mapping[str, Any], group: str) -> dict[str, Any]:
    value = cfg.get(group)
    if not isinstance(value, Mapping) or "name" not in value:
        raise ValueError(f"config group {group!r} is missing or has no 'name' key")
    return dict(value)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the bad key and the allowed values."""
    from kvlab.allocator import ALLOCATORS
    from kvlab.scheduler import SCHEDULERS

    KVConfig.from_config(cfg)  # kv.* values (and their executor fallbacks)
    KVQuantConfig.from_config(cfg)  # kv_quant: scheme name and its knobs
    ex = _require(cfg, "executor")
    if ex["name"] not in EXECUTOR_MODULES:
        raise ValueError(f"executor={ex['name']!r} is unknown; choose one of: {', '.join(EXECUTOR_MODULES)}")
    if ex["name"] != "sim":
        TorchOptions.from_config(cfg)  # device, dtype, attention backend, gemm, threads: before any load
    alloc = _require(cfg, "allocator")
    name, num_blocks = alloc.pop("name"), alloc.pop("num_blocks", None)
    if num_blocks is not None and (not isinstance(num_blocks, int) or num_blocks < 1):
        raise ValueError(f"allocator.num_blocks={num_blocks!r}: must be a positive integer or null")
    max_len = int((cfg.get("kv") or {}).get("max_model_len") or (cfg.get("model") or {}).get("max_model_len")
                  or 2048)
    probe = ALLOCATORS.build(name, 64, max_model_len=max_len, **alloc)
    sched = _require(cfg, "scheduler")
    SCHEDULERS.build(sched.pop("name"), probe, max_len, **sched)
