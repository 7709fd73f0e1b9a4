"""Shared by the attention-backend tests: one backend over one seeded random batch."""

from __future__ import annotations

from typing import Any

import torch

from kvlab.kernels import KVCache, KVSpec, get_backend

KV_HEADS, HEAD_DIM = 2, 16


def run_backend(name: str, seqs: list[tuple[int, int, list[int]]], block_size: int, group: int,
                dtype: torch.dtype, meta_spec: tuple = (), backend: Any = None
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Write the step's K/V and run attention with backend ``name`` on one layer.

    ``seqs`` are ``(start_pos, num_new_tokens, block_table)``; q/k/v and the cache's earlier K/V
    are drawn from a generator seeded with 0, so every backend sees the same numbers for the same
    arguments. Returns (output fp32, the cache's data fp32 after the write, the step's metadata).
    """
    kvh, hd = KV_HEADS, HEAD_DIM
    spec = KVSpec(1, kvh, hd, block_size, dtype, meta_spec)
    num_blocks = max(max(t) for _, _, t in seqs) + 1
    gen = torch.Generator().manual_seed(0)
    T = sum(n for _, n, _ in seqs)
    q = torch.randn(T, kvh * group, hd, generator=gen).to(dtype)
    k = torch.randn(T, kvh, hd, generator=gen).to(dtype)
    v = torch.randn(T, kvh, hd, generator=gen).to(dtype)
    backend = backend or get_backend(name)  # ``backend``: an instance to use instead (e.g. with options)
    cache = KVCache(spec, num_blocks)
    cache.data.copy_(torch.randn(spec.data_shape(num_blocks), generator=gen).to(dtype))  # earlier K/V
    meta = backend.build_metadata(seqs, block_size, torch.device("cpu"))
    backend.write_kv(cache.layers[0], k, v, meta)  # q/k/v rows are in flat (meta.order) order
    return backend.forward(cache.layers[0], q, meta, hd ** -0.5).float(), cache.data.float(), meta
