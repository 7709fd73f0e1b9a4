"""KV-cache ops in plain PyTorch: write new K/V into slots, copy blocks, swap blocks.

Cache layout (one tensor per model): ``[num_layers, 2, num_blocks, block_size, num_kv_heads,
head_dim]``; index 0 of dim 1 is K, 1 is V. One tensor makes a block copy or swap a single
indexed copy across all layers. All ops mutate their destination in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store k, v ([tokens, kv_heads, head_dim]) at ``slot_mapping`` of one layer's caches
    ([num_blocks, block_size, kv_heads, head_dim]). Mutates the caches."""
    kv_heads, head_dim = k.shape[-2:]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def copy_blocks(cache: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> None:
    """Copy-on-write: block ``src`` -> block ``dst`` in every layer of ``cache``. Mutates it."""
    if not pairs:
        return
    src = torch.tensor([s for s, _ in pairs], dtype=torch.long, device=cache.device)
    dst = torch.tensor([d for _, d in pairs], dtype=torch.long, device=cache.device)
    cache[:, :, dst] = cache[:, :, src]


def swap_blocks(src_cache: torch.Tensor, dst_cache: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> None:
    """Copy block ``s`` of ``src_cache`` to block ``d`` of ``dst_cache`` (GPU <-> CPU swap),
    all layers. Mutates ``dst_cache``; the caches may live on different devices."""
    if not pairs:
        return
    src = torch.tensor([s for s, _ in pairs], dtype=torch.long, device=src_cache.device)
    dst = torch.tensor([d for _, d in pairs], dtype=torch.long, device=dst_cache.device)
    moved = src_cache[:, :, src].to(dst_cache.device, non_blocking=dst_cache.device.type == "cuda")
    dst_cache[:, :, dst] = moved
