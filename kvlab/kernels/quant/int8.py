"""``kv_quant=int8``: symmetric int8, one fp32 scale per token per KV head (absmax / 127).

Round trip: ``|x - x'| <= scale / 2 = absmax / 254`` per (token, head); an all-zero row has scale
0 and decodes to exact zeros.
"""

from __future__ import annotations

import torch

from kvlab.kernels.kv_cache import BlockMetadata
from kvlab.kernels.quant import register_scheme
from kvlab.kernels.quant.base import TokenwiseScheme

QMAX = 127


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] -> (codes int8 [..., d], scale fp32 [...])."""
    scale = x.abs().amax(-1) / QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.floor(x / safe[..., None] + 0.5).clamp_(-QMAX, QMAX).to(torch.int8)
    return codes, scale


def dequantize_int8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return codes.float() * scale[..., None]


@register_scheme
class Int8Scheme(TokenwiseScheme):
    names = ("int8",)

    @classmethod
    def layout(cls, cfg, num_kv_heads, head_dim, block_size):
        return torch.uint8, head_dim, [BlockMetadata("scale", (block_size, num_kv_heads), torch.float32)]

    def quantize(self, x, layer, half):
        codes, scale = quantize_int8(x)
        return codes.view(torch.uint8), {"scale": scale}

    def dequantize(self, codes, meta, layer, half):
        return dequantize_int8(codes.view(torch.int8), meta["scale"])
