"""The real-model executor (``executor=torch``): a Llama-family model over a paged KV cache.

``execute(step)`` runs, in order: swap-out (device -> CPU pool), swap-in (CPU pool -> device),
copy-on-write block copies (all three are :class:`~kvlab.kernels.kv_cache.KVCache` operations),
then ONE forward over the flat mixed batch in the order the attention backend chose
(``executor.attention_backend=auto|torch|triton``, see :mod:`kvlab.kernels.backend`; the cache's
KV format is ``kv_quant``, see :mod:`kvlab.kernels.quant`), then
sampling of the rows that asked for it (on the device). ``duration_s`` is the wall time of all
of it (``time.perf_counter``, CUDA synchronized); ``swap_time_s`` the swap part. On CUDA each
step also carries a sampled reading of device memory used and GPU utilization (NVML).

A sequence with ``start_pos > 0`` (a later prefill chunk, a prefix-cache hit, a decode) must
already have the KV of positions ``0 .. start_pos-1`` in the blocks its table names; the
executor writes positions ``start_pos ..`` and reads everything through the table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from kvlab.config import DEFAULT_CPU_KV_GIB
from kvlab.executor import EXECUTORS
from kvlab.executor.base import ScheduledSeq, StepInput, StepOutput
from kvlab.executor.device_monitor import DeviceMonitor
from kvlab.executor.precision import PrecisionChoice, choose_precision, fp32_fast_paths
from kvlab.executor.sampler import Sampler
from kvlab.kernels import KVCache, KVSpec, get_backend, resolve_backend_name
from kvlab.kernels.quant import make_spec
from kvlab.kv_quant_format import KVQuantConfig
from kvlab.models.block_linear import plan_weight_blocks
from kvlab.models.config import resolve_model
from kvlab.models.linear import make_linear
from kvlab.models.llama import LlamaModel
from kvlab.models.loader import load_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Activation + workspace headroom kept free on a GPU besides weights (an estimate, not profiled):
# 8192 batched tokens of hidden/qkv/ffn activations, 512 rows of fp32 logits, 256 MiB workspace.
ACT_TOKENS, LOGIT_ROWS, WORKSPACE = 8192, 512, 256 << 20


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The static fallback: ``auto`` -> bfloat16 on CUDA, float32 on CPU; else one of :data:`DTYPES`.
    The executor decides ``auto`` from the machine instead (:mod:`kvlab.executor.precision`)."""
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
    ``native`` or ``upcast``, see :mod:`kvlab.models.linear`), ``precision`` (the
    :class:`~kvlab.executor.precision.PrecisionChoice`: dtype and gemm chosen and why),
    ``attention_backend`` (the resolved backend name), ``kv_cache`` (the :class:`KVCache`, None
    before ``init_cache``), ``monitor`` (:class:`DeviceMonitor`: device name, NVML samples on CUDA).
    """

    def __init__(self, model_cfg: Mapping[str, Any], device: str = "auto", dtype: str = "auto",
                 kv_cache_gib: float | None = None, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, cpu_kv_gib: float = DEFAULT_CPU_KV_GIB,
                 attention_backend: str = "auto", num_threads: int | None = None,
                 max_model_len: int | None = None, gemm: str = "auto", kv_quant: Any = None,
                 weight_blocks: str | int = "auto") -> None:
        self.kv_quant = KVQuantConfig.parse(kv_quant)
        self.device = resolve_device(device)
        if dtype != "auto":
            resolve_dtype(dtype, self.device)  # the clear error for an unknown name
        if self.device.type == "cpu":
            torch.set_num_threads(num_threads or os.cpu_count() or 1)
        self.precision: PrecisionChoice = choose_precision(
            self.device, dtype, gemm, hidden=int(model_cfg.get("hidden_size") or 576),
            ffn=int(model_cfg.get("ffn_size") or 1536),
            fp32_fast_paths=fp32_fast_paths(model_cfg, self.device, attention_backend, weight_blocks))
        self.dtype = self.precision.dtype
        loaded = load_model(model_cfg, self.device, self.dtype, seed)
        self.arch = loaded.arch
        linear, self.gemm = make_linear(self.device, self.dtype, self.precision.gemm)
        linear, blocks, why = plan_weight_blocks(weight_blocks, model_cfg, loaded.arch, loaded.weights, linear,
                                                 self.device, self.dtype)
        self.precision = replace(self.precision, weight_blocks=why)
        self.attention_backend = resolve_backend_name(attention_backend, self.device)
        self.backend = get_backend(self.attention_backend, self.device)
        self.model = LlamaModel(loaded.arch, loaded.weights, self.backend, linear, blocks)
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
        self.monitor = DeviceMonitor(self.device)
        self.kv_cache: KVCache | None = None
        self.block_size = 0

    # -- memory --------------------------------------------------------------------------
    def kv_spec(self, block_size: int) -> KVSpec:
        """The cache's spec in the configured KV format (``kv_quant``)."""
        a = self.arch
        return make_spec(a.num_layers, a.num_kv_heads, a.head_dim, block_size, self.dtype, self.kv_quant)

    def kv_bytes_per_block(self, block_size: int) -> int:
        """Bytes one block of ``block_size`` tokens costs (:attr:`KVSpec.bytes_per_block`)."""
        return self.kv_spec(block_size).bytes_per_block

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
        """``(budget - the format's fixed bytes) // bytes_per_block``
        (:meth:`kvlab.kv_quant_format.KVQuantConfig.capacity_blocks`, the simulator's formula too)."""
        a = self.arch
        fixed = self.kv_quant.fixed_bytes(a.num_layers, a.num_kv_heads)
        return max(0, self.kv_budget_bytes() - fixed) // self.kv_bytes_per_block(block_size)

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        """Allocate the :class:`KVCache` (device pool + CPU swap pool, pinned on CUDA). Replaces
        an earlier cache."""
        self.kv_cache = None  # free the old cache before allocating the new one
        self.kv_cache = KVCache(self.kv_spec(block_size), num_gpu_blocks, num_cpu_blocks, self.device,
                                copy_fn=getattr(self.backend, "copy_blocks", None))
        self.block_size = block_size

    # -- one step ------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run_block_ops(self, step: StepInput) -> float:
        cache = self.kv_cache
        assert cache is not None
        swap_s = 0.0
        if step.blocks_to_swap_out or step.blocks_to_swap_in:
            t = time.perf_counter()
            cache.swap_out(step.blocks_to_swap_out)
            cache.swap_in(step.blocks_to_swap_in)
            self._sync()
            swap_s = time.perf_counter() - t
        cache.copy_blocks(step.blocks_to_copy)
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
        samples: dict[int, list] = {s.seq_id: [] for s in step.seqs}
        if seqs:
            logits, sampled = self._forward(seqs)
            if sampled:
                for seq, out in zip(sampled, self.sampler.sample(logits, sampled)):
                    samples[seq.seq_id] = out
        self._sync()
        return StepOutput(samples, time.perf_counter() - t0, swap_s, self.monitor.sample())

    def _forward(self, seqs: list[ScheduledSeq]) -> tuple[torch.Tensor, list[ScheduledSeq]]:
        dev = self.device
        meta = self.backend.build_metadata([(s.start_pos, len(s.token_ids), s.block_table) for s in seqs],
                                           self.block_size, dev)
        ids: list[int] = []
        positions: list[int] = []
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        for s in (seqs[i] for i in meta.order):
            ids.extend(s.token_ids)
            positions.extend(range(s.start_pos, s.context_len))
            if s.num_samples > 0:
                rows.append(len(ids) - 1)
                sampled.append(s)
        logits = self.model.forward(
            torch.tensor(ids, dtype=torch.long, device=dev),
            torch.tensor(positions, dtype=torch.long, device=dev),
            self.kv_cache, meta, torch.tensor(rows, dtype=torch.long, device=dev),
        )
        return logits, sampled


@EXECUTORS.register("torch")
def build_torch_executor(cfg: Mapping[str, Any]) -> TorchExecutor:
    """Build from the whole run config: ``model`` (a model config mapping, or a name/path for
    :func:`resolve_model`), ``device``, ``dtype``, ``seed``, ``kv.*`` and ``executor.*``."""
    from kvlab.config import KVConfig, TorchOptions, to_plain

    cfg = to_plain(cfg)
    model = cfg["model"]
    model_cfg = resolve_model(model) if isinstance(model, str) else dict(model)
    kv, opt = KVConfig.from_config(cfg), TorchOptions.from_config(cfg)
    return TorchExecutor(
        model_cfg,
        device=opt.device,
        dtype=opt.dtype,
        kv_cache_gib=kv.kv_cache_gib,
        gpu_memory_utilization=kv.gpu_memory_utilization,
        seed=opt.seed,
        cpu_kv_gib=kv.cpu_kv_gib,
        attention_backend=opt.attention_backend,
        num_threads=opt.num_threads,
        max_model_len=kv.max_model_len,
        gemm=opt.gemm,
        kv_quant=KVQuantConfig.from_config(cfg),
        weight_blocks=opt.weight_blocks,
    )
