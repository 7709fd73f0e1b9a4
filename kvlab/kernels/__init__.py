"""kvlab.kernels: the KV cache, the attention-backend seam, and the attention/cache kernels.

* :mod:`~kvlab.kernels.kv_cache` — :class:`KVCache`, the one owner of the cache tensors, their
  layout, dtype, bytes per block, and the block operations (copy-on-write, swap out / in).
* :mod:`~kvlab.kernels.backend` — the :class:`AttentionBackend` protocol (``build_metadata``,
  ``write_kv``, ``forward``) and a lazy registry: ``get_backend("torch" | "triton" | "auto", device)``.
* Backends: :mod:`~kvlab.kernels.torch_backend` (plain PyTorch, the reference; CPUs run it) and
  :mod:`~kvlab.kernels.triton_backend` (Triton kernels; CUDA, or ``TRITON_INTERPRET=1`` in tests).
* Kernels, one op per file, each with its torch reference beside it. The Triton modules import
  ``triton`` at top level and are imported only when the Triton backend is selected, so this
  package imports on machines where Triton is missing or cannot compile.
"""

from __future__ import annotations

from kvlab.kernels.backend import (
    AttentionBackend,
    StepMetadata,
    backend_names,
    get_backend,
    register_backend,
    resolve_backend_name,
)
from kvlab.kernels.cache_ops import write_kv
from kvlab.kernels.kv_cache import BlockMetadata, KVCache, KVSpec, LayerKV
from kvlab.kernels.metadata import AttentionMetadata, ChunkMeta, build_metadata
from kvlab.kernels.paged_attention import paged_attention

__all__ = [
    "AttentionBackend", "AttentionMetadata", "BlockMetadata", "ChunkMeta", "KVCache", "KVSpec", "LayerKV",
    "StepMetadata", "backend_names", "build_metadata", "get_backend", "paged_attention", "register_backend",
    "resolve_backend_name", "write_kv",
]
