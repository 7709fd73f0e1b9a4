"""The attention-backend seam: the protocol every backend implements and a lazy registry.

A backend owns everything attention needs about one step:

1. ``build_metadata(seqs, block_size, device)`` — once per step, from ``seqs`` = [(start_pos,
   num_new_tokens, block_table)] in the scheduler's order. The backend chooses the order of the
   flat batch (``meta.order``: indices into ``seqs``; both built-in backends put single-token
   decodes first) and builds whatever per-step tensors its kernels want (torch: masks and padded
   block tables; Triton: int32 block tables, ``seq_lens``, ``query_start_loc``). The executor lays
   out token ids and positions in ``meta.order``.
2. ``write_kv(layer, k, v, meta)`` — store the step's new K/V of one layer (mutates the cache).
3. ``forward(layer, q, meta, scale) -> out`` — attention of the flat batch's queries over one
   layer's paged cache. Pure.

``layer`` is a :class:`~kvlab.kernels.kv_cache.LayerKV` (K/V views plus the layer's per-block
metadata), so a quantized KV format reaches the kernels without changing these signatures.
Optionally a backend has ``copy_blocks(cache [P, num_blocks, ...], src, dst)``, which the KV cache
uses for copy-on-write.

Backends register by name -> "module:attribute" and are imported only when selected, so
``import kvlab`` and the torch backend work where Triton cannot be imported or compiled.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from kvlab.kernels.kv_cache import LayerKV

SeqSpan = tuple[int, int, Sequence[int]]  # (start_pos, num_new_tokens, block_table)


@runtime_checkable
class StepMetadata(Protocol):
    """What the executor reads from any backend's per-step metadata."""

    order: list[int]  # flat-batch order of the step's seqs (indices into build_metadata's input)
    slot_mapping: torch.Tensor  # [tokens] int64: cache slot of each flat token


@runtime_checkable
class AttentionBackend(Protocol):
    """Per-step metadata, KV writes and paged attention. Implementations are stateless between
    steps (all step state lives in the metadata object)."""

    name: str

    def build_metadata(self, seqs: Sequence[SeqSpan], block_size: int, device: torch.device) -> Any: ...

    def write_kv(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, meta: Any) -> None: ...

    def forward(self, layer: LayerKV, q: torch.Tensor, meta: Any, scale: float) -> torch.Tensor: ...


# name -> "module:attribute" of a zero-argument factory (a class). Imported on first use.
_REGISTRY: dict[str, str] = {
    "torch": "kvlab.kernels.torch_backend:TorchBackend",
    "triton": "kvlab.kernels.triton_backend:TritonBackend",
    "cpu": "kvlab.kernels.cpu_backend:CpuBackend",
}
CHOICES = ("auto", *_REGISTRY)


def register_backend(name: str, target: str) -> None:
    """Register ``target`` ("module:attribute") under ``name``; nothing is imported now."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return list(_REGISTRY)


def resolve_backend_name(name: str, device: torch.device | str) -> str:
    """``auto`` -> ``triton`` on CUDA, ``cpu`` on a CPU (:mod:`kvlab.kernels.cpu_backend`), ``torch``
    elsewhere; other names are checked and returned."""
    if name == "auto":
        kind = torch.device(device).type
        return "triton" if kind == "cuda" else "cpu" if kind == "cpu" else "torch"
    if name not in _REGISTRY:
        raise ValueError(f"executor.attention_backend={name!r} is unknown; choose one of: "
                         f"{', '.join(['auto', *_REGISTRY])}")
    return name


def get_backend(name: str = "torch", device: torch.device | str = "cpu") -> AttentionBackend:
    """Build the backend ``name`` (``auto`` resolved for ``device``), importing its module now.

    Raises ``ValueError`` for an unknown name, and ``RuntimeError`` when the Triton backend is asked
    for on a CPU without ``TRITON_INTERPRET=1`` (Triton compiles only for GPUs).
    """
    name = resolve_backend_name(name, device)
    if name == "triton" and torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("executor.attention_backend=triton needs a CUDA device, or TRITON_INTERPRET=1 set "
                           "before kvlab.kernels' Triton modules are imported (the interpreter is slow: tests "
                           "only); use executor.attention_backend=torch on a CPU")
    module, attr = _REGISTRY[name].split(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise RuntimeError(f"executor.attention_backend={name!r} cannot be imported here: {e}") from e
    return factory()
