"""``kv_quant=fp8_e4m3 | fp8_e5m2``: one byte per element, one fp32 scale per (layer, K|V, KV head).

The scale table lives outside the blocks (it is per layer and head, not per block), so block
operations need nothing extra. ``scale: fixed`` keeps every scale at 1.0 (vLLM's default);
``scale: calibrated`` sets each layer's scales from the first write into it (amax / fp8 max per
head, a prefill in practice) and freezes them; values beyond saturate at the format's maximum.

Round trip: relative error <= 2^-4 (e4m3, 3 mantissa bits) or 2^-3 (e5m2) for normal values;
absolute error <= half the smallest subnormal (x scale) near zero; zeros exact.
"""

from __future__ import annotations

import torch

from kvlab.kernels.quant import register_scheme
from kvlab.kernels.quant.base import TokenwiseScheme

FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
# (smallest normal exponent, mantissa bits) of each format
FP8_BITS = {torch.float8_e4m3fn: (-6, 3), torch.float8_e5m2: (-14, 2)}


def round_to_fp8_grid(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round fp32 ``y`` to the nearest value of the fp8 format (ties toward +inf), in fp32.

    Done explicitly, with the same integer/power-of-two arithmetic as the Triton write kernel, so
    both give identical bits (the Triton interpreter's own fp32->fp8 cast drops the carry when
    rounding crosses a power of two). The grid step is ``2^(max(exponent, emin) - mantissa_bits)``;
    every operation is exact but the final ``floor``.
    """
    emin, mbits = FP8_BITS[dtype]
    e = ((y.view(torch.int32) >> 23) & 255) - 127
    step = (((torch.clamp(e, min=emin) - mbits + 127) << 23).to(torch.int32)).view(torch.float32)
    fmax = torch.finfo(dtype).max
    return (torch.floor(y / step + 0.5) * step).clamp_(-fmax, fmax)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x [..., h, d] / scale [h] -> fp8 bits as uint8 (saturating at the format's maximum)."""
    fmax = torch.finfo(dtype).max
    y = (x / scale[:, None]).clamp_(-fmax, fmax).contiguous()
    return round_to_fp8_grid(y, dtype).to(dtype).view(torch.uint8)


def dequantize_fp8(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return codes.view(dtype).float() * scale[:, None]


@register_scheme
class FP8Scheme(TokenwiseScheme):
    names = ("fp8_e4m3", "fp8_e5m2")

    def __init__(self, spec):
        super().__init__(spec)
        self.fp8 = FP8[self.name]
        self.calibrate = self.cfg.scale == "calibrated"
        self.calibrated = [False] * spec.num_layers
        self.scales: torch.Tensor | None = None

    @classmethod
    def layout(cls, cfg, num_kv_heads, head_dim, block_size):
        return torch.uint8, head_dim, []

    def attach(self, cache):
        super().attach(cache)
        s = self.spec
        self.scales = torch.ones(s.num_layers, 2, s.num_kv_heads, dtype=torch.float32, device=cache.device)

    def state_nbytes(self) -> int:
        return 0 if self.scales is None else self.scales.nbytes

    def quantize(self, x, layer, half):
        assert self.scales is not None
        if self.calibrate and not self.calibrated[layer] and x.shape[0] > 0:
            self._calibrate(x, layer, half)
        return quantize_fp8(x, self.scales[layer, half], self.fp8), {}

    def maybe_calibrate(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """``scale: calibrated``: set layer ``layer``'s scales from this first write (the fused Triton
        write calls this before quantizing; the torch write does it in :meth:`quantize`)."""
        if self.calibrate and not self.calibrated[layer] and k.shape[0] > 0:
            self._calibrate(k.float(), layer, 0)
            self._calibrate(v.float(), layer, 1)

    def _calibrate(self, x: torch.Tensor, layer: int, half: int) -> None:
        assert self.scales is not None
        amax = x.abs().amax(dim=(0, 2))
        scale = amax / torch.finfo(self.fp8).max
        self.scales[layer, half] = torch.where(scale > 0, scale, torch.ones_like(scale))
        if half == 1:
            self.calibrated[layer] = True

    def dequantize(self, codes, meta, layer, half):
        assert self.scales is not None
        return dequantize_fp8(codes, self.scales[layer, half], self.fp8)
