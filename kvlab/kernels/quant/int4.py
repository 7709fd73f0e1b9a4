"""``kv_quant=int4``: asymmetric 4-bit, groups of ``group_size`` channels along head_dim, one fp32
scale and zero (the group minimum) per (token, head, group); two codes per byte (even channel in
the low nibble).

Round trip: ``|x - x'| <= scale / 2 = (max - min) / 30`` per group; an all-equal group has
scale 0 and decodes exactly.
"""

from __future__ import annotations

import torch

from kvlab.kernels.kv_cache import BlockMetadata
from kvlab.kernels.quant import register_scheme
from kvlab.kernels.quant.base import TokenwiseScheme


def quantize_minmax(g: torch.Tensor, dim: int, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max quantization of ``g`` with one scale and zero (the minimum) per slice along
    ``dim``. Returns (codes uint8 shaped like ``g`` in 0..levels-1, scale, zero: ``dim`` reduced).
    Shared by int4 and kivi2 (channel groups and kivi2's per-channel key groups over tokens)."""
    mn, mx = g.amin(dim), g.amax(dim)
    scale = (mx - mn) / (levels - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.floor((g - mn.unsqueeze(dim)) / safe.unsqueeze(dim) + 0.5).clamp_(0, levels - 1).to(torch.uint8)
    return codes, scale, mn


def dequantize_minmax(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of :func:`quantize_minmax` (fp32): ``codes * scale + zero`` along ``dim``."""
    return codes.float() * scale.unsqueeze(dim) + zero.unsqueeze(dim)


def quantize_groups(x: torch.Tensor, group: int, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max quantization of ``x`` [..., d] in groups of ``group`` along the last dim.
    Returns (codes uint8 [..., d] in 0..levels-1, scale [..., d/group], zero [..., d/group])."""
    codes, scale, zero = quantize_minmax(x.unflatten(-1, (-1, group)), -1, levels)
    return codes.flatten(-2), scale, zero


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int) -> torch.Tensor:
    return dequantize_minmax(codes.unflatten(-1, (-1, group)), scale, zero, -1).flatten(-2)


def pack4(codes: torch.Tensor) -> torch.Tensor:
    """[..., d] codes 0..15 -> [..., d/2] bytes (even index low nibble)."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack4(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


@register_scheme
class Int4Scheme(TokenwiseScheme):
    names = ("int4",)

    def __init__(self, spec):
        super().__init__(spec)
        self.group = self.cfg.channel_group(spec.head_dim)

    @classmethod
    def layout(cls, cfg, num_kv_heads, head_dim, block_size):
        g = cfg.channel_group(head_dim)
        if head_dim % 2:
            raise ValueError(f"kv_quant=int4 needs an even head_dim, got {head_dim}")
        shape = (block_size, num_kv_heads, head_dim // g)
        return torch.uint8, head_dim // 2, [BlockMetadata("scale", shape, torch.float32),
                                            BlockMetadata("zero", shape, torch.float32)]

    def quantize(self, x, layer, half):
        codes, scale, zero = quantize_groups(x, self.group, 16)
        return pack4(codes), {"scale": scale, "zero": zero}

    def dequantize(self, codes, meta, layer, half):
        return dequantize_groups(unpack4(codes), meta["scale"], meta["zero"], self.group)
