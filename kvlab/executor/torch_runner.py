"""The real-model executor (``executor=torch``): a Llama-family model over a paged KV cache.

``execute(step)`` runs, in order: swap-out (device -> CPU pool), swap-in (CPU pool -> device),
copy-on-write block copies, then ONE forward over the flat mixed batch (decode tokens first,
then prefill chunks), then sampling of the rows that asked for it. ``duration_s`` is the wall
time of all of it (``time.perf_counter``, CUDA synchronized); ``swap_time_s`` the swap part.

A sequence with ``start_pos > 0`` (a later prefill chunk, a prefix-cache hit, a decode) must
already have the KV of positions ``0 .. start_pos-1`` in the blocks its table names; the
executor writes positions ``start_pos ..`` and reads everything through the table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from kvlab.executor import EXECUTORS
from kvlab.executor.base import ScheduledSeq, StepInput, StepOutput
from kvlab.executor.sampler import Sampler
from kvlab.kernels import build_metadata, copy_blocks, get_backend, swap_blocks
from kvlab.models.config import resolve_model
from kvlab.models.linear import make_linear
from kvlab.models.llama import LlamaModel
from kvlab.models.loader import load_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_CPU_KV_GIB = 2.0
# Activation + workspace headroom kept free on a GPU besides weights (an estimate, not profiled):
# 8192 batched tokens of hidden/qkv/ffn activations, 512 rows of fp32 logits, 256 MiB workspace.
ACT_TOKENS, LOGIT_ROWS, WORKSPACE = 8192, 512, 256 << 20


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU; else one of :data:`DTYPES`."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


class TorchExecutor:
    """Implements :class:`kvlab.executor.base.Executor` with a real model.

    Attributes the engine uses: ``max_model_len``, ``eos_token_id`` (the tokenizer's EOS, or the
    checkpoint's first EOS id; None for random weights), ``stop_token_ids`` (every EOS id the
    checkpoint declares), ``tokenizer`` (a Hugging Face tokenizer with chat template, or None
    for random weights), ``device``, ``dtype``, ``model``, ``gemm`` (the matmul path taken:
    ``native`` or ``upcast``, see :mod:`kvlab.models.linear`).
    """

    def __init__(self, model_cfg: Mapping[str, Any], device: str = "auto", dtype: str = "auto",
                 kv_cache_gib: float | None = None, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, cpu_kv_gib: float = DEFAULT_CPU_KV_GIB,
                 attention_backend: str = "torch", num_threads: int | None = None,
                 max_model_len: int | None = None, gemm: str = "auto") -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(num_threads or os.cpu_count() or 1)
        loaded = load_model(model_cfg, self.device, self.dtype, seed)
        self.arch = loaded.arch
        linear, self.gemm = make_linear(self.device, self.dtype, gemm)
        self.model = LlamaModel(loaded.arch, loaded.weights, get_backend(attention_backend), linear)
        self.tokenizer = loaded.tokenizer
        tok_eos = getattr(self.tokenizer, "eos_token_id", None)
        eos_ids = {*loaded.arch.eos_token_ids, *([tok_eos] if tok_eos is not None else [])}
        self.stop_token_ids = sorted(eos_ids)
        self.eos_token_id = tok_eos if tok_eos is not None else (self.stop_token_ids or [None])[0]
        limits = [loaded.arch.max_model_len, model_cfg.get("max_model_len"), max_model_len]
        self.max_model_len = int(min(x for x in limits if x))
        self.kv_cache_gib = kv_cache_gib
        self.cpu_kv_gib = cpu_kv_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.sampler = Sampler(self.eos_token_id, seed)
        self.kv_cache: torch.Tensor | None = None
        self.cpu_cache: torch.Tensor | None = None
        self.block_size = 0

    # -- memory --------------------------------------------------------------------------
    def kv_bytes_per_block(self, block_size: int) -> int:
        """Bytes of K and V for ``block_size`` tokens across all layers."""
        a = self.arch
        return a.num_layers * 2 * block_size * a.num_kv_heads * a.head_dim * self.dtype.itemsize

    def kv_budget_bytes(self) -> int:
        """KV bytes allowed: ``kv_cache_gib`` if set; on CPU ``cpu_kv_gib``; on CUDA total x
        utilization minus what is already used (weights, other processes) and an activation
        estimate."""
        if self.kv_cache_gib is not None:
            return int(self.kv_cache_gib * (1 << 30))
        if self.device.type != "cuda":
            return int(self.cpu_kv_gib * (1 << 30))
        free, total = torch.cuda.mem_get_info(self.device)
        a, e = self.arch, self.dtype.itemsize
        act = ACT_TOKENS * (4 * a.hidden_size + 3 * a.ffn_size + 2 * a.num_heads * a.head_dim) * e
        act += LOGIT_ROWS * a.vocab_size * 4 + WORKSPACE
        return max(0, int(total * self.gpu_memory_utilization) - (total - free) - act)

    def kv_capacity_blocks(self, block_size: int) -> int:
        return self.kv_budget_bytes() // self.kv_bytes_per_block(block_size)

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        """Allocate zeroed caches [layers, 2, blocks, block_size, kv_heads, head_dim] on the device
        and (for swapping) on the CPU, pinned when the device is CUDA. Replaces earlier caches."""
        a = self.arch
        shape = (a.num_layers, 2, 0, block_size, a.num_kv_heads, a.head_dim)
        self.kv_cache = None  # free the old cache before allocating the new one
        # Zeros, not empty: padded decode slots are masked, but NaN garbage would survive 0 * NaN.
        self.kv_cache = torch.zeros(*shape[:2], num_gpu_blocks, *shape[3:], dtype=self.dtype,
                                    device=self.device)
        pin = self.device.type == "cuda" and num_cpu_blocks > 0
        self.cpu_cache = torch.zeros(*shape[:2], num_cpu_blocks, *shape[3:], dtype=self.dtype,
                                     pin_memory=pin)
        self.block_size = block_size

    # -- one step ------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run_block_ops(self, step: StepInput) -> float:
        assert self.kv_cache is not None and self.cpu_cache is not None
        swap_s = 0.0
        if step.blocks_to_swap_out or step.blocks_to_swap_in:
            t = time.perf_counter()
            swap_blocks(self.kv_cache, self.cpu_cache, step.blocks_to_swap_out)
            swap_blocks(self.cpu_cache, self.kv_cache, step.blocks_to_swap_in)
            self._sync()
            swap_s = time.perf_counter() - t
        copy_blocks(self.kv_cache, step.blocks_to_copy)
        return swap_s

    @torch.inference_mode()
    def execute(self, step: StepInput) -> StepOutput:
        """Run one step (see the module docstring). Mutates the KV caches."""
        if self.kv_cache is None:
            raise RuntimeError("init_cache() must be called before execute()")
        t0 = time.perf_counter()
        swap_s = self._run_block_ops(step)
        seqs = [s for s in step.seqs if s.token_ids]
        for s in seqs:
            if s.context_len > self.max_model_len:
                raise ValueError(
                    f"seq {s.seq_id}: context {s.context_len} > max_model_len {self.max_model_len}"
                )
        decodes = [s for s in seqs if s.is_decode]
        ordered = decodes + [s for s in seqs if len(s.token_ids) > 1]
        samples: dict[int, list] = {s.seq_id: [] for s in step.seqs}
        if ordered:
            logits, sampled = self._forward(ordered, len(decodes))
            if sampled:
                for seq, out in zip(sampled, self.sampler.sample(logits, sampled)):
                    samples[seq.seq_id] = out
        self._sync()
        return StepOutput(samples, time.perf_counter() - t0, swap_s)

    def _forward(self, ordered: list[ScheduledSeq],
                 num_decodes: int) -> tuple[torch.Tensor, list[ScheduledSeq]]:
        ids: list[int] = []
        positions: list[int] = []
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        for s in ordered:
            ids.extend(s.token_ids)
            positions.extend(range(s.start_pos, s.context_len))
            if s.num_samples > 0:
                rows.append(len(ids) - 1)
                sampled.append(s)
        dev = self.device
        meta = build_metadata([(s.start_pos, len(s.token_ids), s.block_table) for s in ordered],
                              num_decodes, self.block_size, dev)
        logits = self.model.forward(
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            self.kv_cache, meta, torch.tensor(rows, dtype=torch.long, device=dev),
        )
        return logits, sampled


def _plain(x: Any) -> Any:
    """OmegaConf nodes -> plain containers; anything else unchanged."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return x
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


@EXECUTORS.register("torch")
def build_torch_executor(cfg: Mapping[str, Any]) -> TorchExecutor:
    """Build from the whole run config: ``model`` (a model config mapping, or a name/path for
    :func:`resolve_model`), ``device``, ``dtype``, ``seed``, ``kv.*`` and ``executor.*``."""
    cfg = _plain(cfg)
    model = cfg["model"]
    model_cfg = resolve_model(model) if isinstance(model, str) else dict(model)
    kv = cfg.get("kv") or {}
    ex = cfg.get("executor") or {}
    return TorchExecutor(
        model_cfg,
        device=str(cfg.get("device", "auto")),
        dtype=str(cfg.get("dtype", "auto")),
        kv_cache_gib=ex.get("kv_cache_gib", kv.get("kv_cache_gib")),
        gpu_memory_utilization=float(kv.get("gpu_memory_utilization", 0.9)),
        seed=int(cfg.get("seed", 0)),
        cpu_kv_gib=float(kv.get("cpu_kv_gib") or ex.get("cpu_kv_gib") or DEFAULT_CPU_KV_GIB),
        attention_backend=str(ex.get("attention_backend", "torch")),
        num_threads=ex.get("num_threads"),
        max_model_len=kv.get("max_model_len"),
        gemm=str(ex.get("gemm", "auto")),
    )
