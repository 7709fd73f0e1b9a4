"""kvlab.kernels: attention and cache kernels, one op per file, each with a torch reference.

Triton kernels run on a CUDA GPU; on a CPU they run only under ``TRITON_INTERPRET=1`` (tests use
tiny shapes). The torch reference beside each kernel is what CPU execution uses.

The model calls attention through ONE interface, :class:`AttentionBackend`:

* ``write_kv(k, v, k_cache, v_cache, slot_mapping)`` stores the step's new K/V (mutates caches);
* ``paged_attention(q, k_cache, v_cache, meta, scale) -> out`` reads context through block tables;

with :class:`~kvlab.kernels.metadata.AttentionMetadata` built once per step by
:func:`~kvlab.kernels.metadata.build_metadata`. ``get_backend("torch")`` is the reference; a
Triton backend registers under another name with the same two calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from kvlab.kernels.cache_ops import copy_blocks, swap_blocks, write_kv
from kvlab.kernels.metadata import AttentionMetadata, ChunkMeta, build_metadata
from kvlab.kernels.paged_attention import paged_attention


@dataclass(frozen=True)
class AttentionBackend:
    """The attention calls a forward makes; see the module docstring for their contracts."""

    name: str
    write_kv: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]
    paged_attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata, float],
                              torch.Tensor]


BACKENDS: dict[str, AttentionBackend] = {
    "torch": AttentionBackend("torch", write_kv, paged_attention),
}


def get_backend(name: str = "torch") -> AttentionBackend:
    """The attention backend called ``name``; ``ValueError`` lists the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join(BACKENDS)
        raise ValueError(f"unknown attention backend {name!r}; choose one of: {known}") from None


__all__ = [
    "AttentionBackend", "AttentionMetadata", "BACKENDS", "ChunkMeta", "build_metadata", "copy_blocks",
    "get_backend", "paged_attention", "swap_blocks", "write_kv",
]
