"""What the Triton kernels need to dequantize (or quantize) a layer's cache inside the kernel.

Torch-only (no Triton import): the launchers call :func:`fused_args` and pass the tensors and
strides on. ``mode`` is a kernel constexpr: 0 none, 1 fp8_e4m3, 2 fp8_e5m2, 3 int8, 4 int4.
Every scale (and int4's zero) is addressed as ``[block, row, head, group]`` with stride 0 on the
axes a scheme does not have (fp8: one scale per head; int8: per token and head). kivi2 has no
fused path (:func:`fused_args` returns None for it; the Triton backend then dequantizes the
step's blocks with the scheme's torch code and runs the unquantized kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.kernels.kv_cache import LayerKV

MODES = {"fp8_e4m3": 1, "fp8_e5m2": 2, "int8": 3, "int4": 4}


@dataclass
class FusedQuant:
    """Kernel arguments of one layer's quantized cache (views, no copies)."""

    mode: int
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    k_zero: torch.Tensor
    v_zero: torch.Tensor
    strides: tuple[int, int, int, int]  # (block, row, head, group) of every scale/zero tensor
    group: int  # channels per scale group (1 when the scale has no group axis)

    def args(self) -> tuple:
        return (self.k_scale, self.v_scale, self.k_zero, self.v_zero, *self.strides)


def fused_args(layer: LayerKV) -> FusedQuant | None:
    """The fused-kernel arguments of ``layer``, or None when its format has no fused path."""
    scheme = layer.scheme
    if scheme is None or scheme.name not in MODES:
        return None
    mode = MODES[scheme.name]
    if mode in (1, 2):
        ks, vs = scheme.scales[layer.index, 0], scheme.scales[layer.index, 1]
        return FusedQuant(mode, ks, vs, ks, vs, (0, 0, ks.stride(0), 0), 1)
    ks, vs = layer.metadata["scale"]
    if mode == 3:
        return FusedQuant(mode, ks, vs, ks, vs, (*ks.stride(), 0), 1)
    if scheme.group & (scheme.group - 1):
        return None  # the fused int4 tile splits head_dim into power-of-two groups
    kz, vz = layer.metadata["zero"]
    assert kz.stride() == ks.stride()
    return FusedQuant(mode, ks, vs, kz, vz, tuple(ks.stride()), scheme.group)


def dequantized_step_cache(layer: LayerKV, tables: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                             list[torch.Tensor]]:
    """Unfused fallback: dequantize only the blocks ``tables`` name (int32 tables, padding included)
    into compact K/V caches, and renumber the tables into them. Returns (k, v, new tables)."""
    scheme = layer.scheme
    used = torch.unique(torch.cat([t.reshape(-1) for t in tables]).long())
    B = layer.k.shape[1]
    k = scheme.read(layer, used, 0)
    v = scheme.read(layer, used, 1)
    k, v = k.view(used.numel(), B, *k.shape[1:]), v.view(used.numel(), B, *v.shape[1:])
    remap = torch.zeros(layer.k.shape[0], dtype=torch.int32, device=used.device)
    remap[used] = torch.arange(used.numel(), dtype=torch.int32, device=used.device)
    return k, v, [remap[t.long()] for t in tables]
