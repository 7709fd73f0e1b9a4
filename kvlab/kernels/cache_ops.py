"""Writing new K/V into a paged cache, in plain PyTorch (the reference for ``write_kv_triton``).

One layer's caches are ``[num_blocks, block_size, kv_heads, head_dim]`` views of the KV cache
(:mod:`kvlab.kernels.kv_cache` owns the full layout and the block copy / swap operations).
"""

from __future__ import annotations

import torch


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store k, v ([tokens, kv_heads, head_dim]) at ``slot_mapping`` of one layer's caches
    ([num_blocks, block_size, kv_heads, head_dim]). Mutates the caches."""
    kv_heads, head_dim = k.shape[-2:]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(v_cache.dtype))
