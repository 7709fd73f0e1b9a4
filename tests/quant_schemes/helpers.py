"""Shared helpers: a one-layer quantized cache, writing tokens into it and reading blocks back."""

from __future__ import annotations

import torch

from kvlab.kernels import KVCache
from kvlab.kernels.quant import make_spec
from kvlab.kernels.torch_backend import TorchBackend

SCHEMES = ["none", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "kivi2"]
QUANTIZED = SCHEMES[1:]


def cache_for(quant, num_blocks: int = 8, block_size: int = 16, kvh: int = 2, hd: int = 64,
              dtype: torch.dtype = torch.float32, num_layers: int = 1, cpu_blocks: int = 0) -> KVCache:
    return KVCache(make_spec(num_layers, kvh, hd, block_size, dtype, quant), num_blocks, cpu_blocks)


def write_seq(cache: KVCache, table: list[int], k: torch.Tensor, v: torch.Tensor, start: int = 0) -> None:
    """Write ``k``/``v`` [n, kvh, hd] at positions start.. of a sequence with block ``table``, all layers."""
    be = TorchBackend()
    meta = be.build_metadata([(start, k.shape[0], table)], cache.block_size, torch.device("cpu"))
    for layer in cache.layers:
        be.write_kv(layer, k, v, meta)


def read_seq(cache: KVCache, table: list[int], n: int, half: int, layer: int = 0) -> torch.Tensor:
    """Positions 0..n-1 of K (half 0) or V (1) as [n, kvh, hd] fp32."""
    lay = cache.layers[layer]
    blocks = torch.tensor(table, dtype=torch.long)
    if lay.scheme is None:
        data = lay.k if half == 0 else lay.v
        x = data.index_select(0, blocks).reshape(-1, *data.shape[2:])
    else:
        x = lay.scheme.read(lay, blocks, half)
    return x[:n].float()
