"""Reading the run configuration: one conversion, one set of defaults, one precedence.

Every entry point hands a Hydra ``DictConfig`` or a plain mapping to the engine, the executors
and the workload builder. :func:`to_plain` is the one conversion of such a config into plain,
resolved Python containers (it replaces four hand-written ones). :class:`KVConfig` is the ``kv``
section and :class:`TorchOptions` the real-model executor's options, each parsed and validated
once (by ``check_config``, before any model loads) with one set of defaults; executors and the
engine take typed values from them instead of each looking keys up with defaults of their own.
The allocator and scheduler groups are validated by their own constructors on a probe pool
(``check_config``): their options are their constructors' typed keyword arguments.

Precedence, written once: a root ``kv.<key>`` set (not null) wins over the executor group's
``executor.<key>``, which wins over the default below. (The torch executor used to read
``kv_cache_gib`` executor-first and ``cpu_kv_gib`` kv-first.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# An absent kv.swap_space_gib means no swap pool: the torch executor allocates the pool for real,
# so a silent default would cost GiBs of RAM. conf/config.yaml sets 4 GiB (vLLM's default) and
# conf/serve.yaml 1 GiB explicitly. (The engine read 0 when absent, the simulator 4.)
DEFAULT_SWAP_SPACE_GIB = 0.0
DEFAULT_CPU_KV_GIB = 2.0  # the torch executor's KV budget on a CPU (~45k SmolLM2 tokens in fp32)
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


def to_plain(cfg: Any) -> Any:
    """A plain, resolved deep copy of a DictConfig / ListConfig / mapping (other values unchanged)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    if isinstance(cfg, Mapping):
        return {k: to_plain(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)


def section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``cfg[name]`` as a plain dict; ``{}`` when absent or null; a ``ValueError`` naming it otherwise."""
    value = cfg.get(name)
    if value is None:
        return {}
    value = to_plain(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"config key {name!r} must be a mapping, got {value!r}")
    return dict(value)


def _number(key: str, value: Any, *, low: float, low_ok: bool = True, high: float | None = None) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
    if not bad:
        v = float(value)
        bad = v < low or (v == low and not low_ok) or (high is not None and v > high)
    if bad:
        rng = f"{'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ValueError(f"{key}={value!r}: must be a number {rng}")
    return float(value)


def _layered(kv: Mapping[str, Any], ex: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """(where it came from, value) of ``key``: kv first, then executor; (name, None) if neither."""
    if kv.get(key) is not None:
        return f"kv.{key}", kv[key]
    if ex.get(key) is not None:
        return f"executor.{key}", ex[key]
    return f"kv.{key}", None


@dataclass(frozen=True)
class KVConfig:
    """The ``kv`` section (with the executor-group fallbacks), validated.

    Attributes:
        gpu_memory_utilization: fraction of device memory the engine may use, in (0, 1].
        swap_space_gib: CPU swap pool for swap preemption in GiB (0 disables it).
        max_model_len: tokens per sequence; None = the model's own maximum.
        kv_cache_gib: a fixed KV budget in GiB; None = derive it (CPU: ``cpu_kv_gib``; GPU: memory).
        cpu_kv_gib: the KV budget when running on a CPU, GiB.
    """

    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    swap_space_gib: float = DEFAULT_SWAP_SPACE_GIB
    max_model_len: int | None = None
    kv_cache_gib: float | None = None
    cpu_kv_gib: float = DEFAULT_CPU_KV_GIB

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> KVConfig:
        """Parse ``cfg.kv`` (and ``cfg.executor`` fallbacks); raises ``ValueError`` naming the key."""
        kv, ex = section(cfg, "kv"), section(cfg, "executor")
        out: dict[str, Any] = {}  # other kv.* keys belong to other readers (e.g. a KV format)
        if kv.get("gpu_memory_utilization") is not None:
            out["gpu_memory_utilization"] = _number("kv.gpu_memory_utilization", kv["gpu_memory_utilization"],
                                                    low=0.0, low_ok=False, high=1.0)
        if kv.get("swap_space_gib") is not None:
            out["swap_space_gib"] = _number("kv.swap_space_gib", kv["swap_space_gib"], low=0.0)
        if kv.get("max_model_len") is not None:
            v = kv["max_model_len"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValueError(f"kv.max_model_len={v!r}: must be an integer >= 2 or null (the model's own)")
            out["max_model_len"] = v
        where, v = _layered(kv, ex, "kv_cache_gib")
        if v is not None:
            out["kv_cache_gib"] = _number(where, v, low=0.0, low_ok=False)
        where, v = _layered(kv, ex, "cpu_kv_gib")
        if v is not None:
            out["cpu_kv_gib"] = _number(where, v, low=0.0, low_ok=False)
        return cls(**out)


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
BACKEND_CHOICES = ("auto", "torch", "triton", "cpu")  # kvlab.kernels.backend registers these names
GEMM_CHOICES = ("auto", "native", "upcast", "packed")  # kvlab.models.linear.GEMM_MODES


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is unknown; choose one of: {', '.join(choices)}")
    return str(value)


@dataclass(frozen=True)
class TorchOptions:
    """The real-model executor's options (root ``device``/``dtype``/``seed`` and ``executor.*``),
    validated before any model loads.

    Attributes:
        device: ``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: one of :data:`DTYPE_CHOICES` (``auto`` is decided from the device and CPU at run time).
        attention_backend: one of :data:`BACKEND_CHOICES` (``auto``: triton on CUDA, torch on CPU).
        gemm: one of :data:`GEMM_CHOICES` (the CPU matmul path).
        weight_blocks: ``auto``, ``off`` or a row count: small-batch matmuls over the checkpoint's
            GGUF blocks (:mod:`kvlab.models.block_linear`).
        num_threads: torch CPU threads; None = all cores.
        seed: the run's seed (weights of random checkpoints, unseeded sampling).
    """

    device: str = "auto"
    dtype: str = "auto"
    attention_backend: str = "auto"
    gemm: str = "auto"
    num_threads: int | None = None
    seed: int = 0
    weight_blocks: str | int = "auto"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TorchOptions:
        """Parse; raises ``ValueError`` naming the key and its choices."""
        ex = section(cfg, "executor")
        device = str(cfg.get("device") or "auto")
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ValueError(f"device={device!r} is unknown; choose one of: auto, cpu, cuda, cuda:N")
        threads = ex.get("num_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"executor.num_threads={threads!r}: must be a positive integer or null (all cores)")
        blocks = ex.get("weight_blocks", "auto")
        blocks = "auto" if blocks is None else blocks
        is_rows = isinstance(blocks, int) and not isinstance(blocks, bool) and blocks >= 0
        if not (blocks in ("auto", "off") or is_rows):
            raise ValueError(f"executor.weight_blocks={blocks!r} is unknown; choose one of: auto, off, "
                             "or a number of rows (>= 0)")
        seed = cfg.get("seed") or 0
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r}: must be an integer")
        return cls(device=device, dtype=_choice("dtype", str(cfg.get("dtype") or "auto"), DTYPE_CHOICES),
                   attention_backend=_choice("executor.attention_backend",
                                             str(ex.get("attention_backend") or "auto"), BACKEND_CHOICES),
                   gemm=_choice("executor.gemm", str(ex.get("gemm") or "auto"), GEMM_CHOICES),
                   num_threads=threads, seed=seed, weight_blocks=blocks)
