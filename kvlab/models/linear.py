"""The model's matrix multiply (``y = x @ w.T + b``), chosen once per executor for its device/dtype.

Why this exists: on a CPU without native bf16/fp16 GEMM (no AVX-512 BF16 / AMX; e.g. this repo's
AVX2-only dev VM, where ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is False), PyTorch runs a
bf16 ``F.linear`` as one matrix-vector product per row: cost grows linearly with the batch, so a
batch of 32 decode tokens costs ~5x the fp32 GEMM. Batched decoding is exactly what an LLM engine
does, so kvlab's bf16 on such a CPU would be slower than its fp32.

:class:`TiledUpcastLinear` computes the SAME arithmetic as a bf16 GEMM with fp32 accumulation
(what oneDNN, AMX and tensor cores do): the bf16 operands are widened exactly to fp32 one tile of
weight rows at a time (a tile fits in cache and its buffer is reused, so nothing is allocated per
call), multiplied by the fp32 GEMM, and the result is rounded back to the activation dtype. Weights
and the KV cache stay in bf16 (half the memory of fp32); activations between ops stay bf16. Small
batches (fewer than ``min_rows`` rows: single-sequence decoding, which is memory-bound) keep the
native path, which reads half the bytes of fp32 and is faster there.

``gemm=native`` forces ``F.linear`` everywhere (to measure the difference); ``gemm=auto`` (the
default) picks the upcast path only where it helps: CPU, a 16-bit dtype, no native 16-bit GEMM.

Not thread-safe: one instance owns one scratch buffer, and one executor runs one forward at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LinearFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
GEMM_MODES = ("auto", "native", "upcast")


class TiledUpcastLinear:
    """``F.linear`` for 16-bit operands through the fp32 GEMM, one cached tile of weight rows at a
    time (see the module docstring). ``tile_elems`` bounds the fp32 scratch (default 1 Mi floats =
    4 MiB, measured best of 256 Ki / 1 Mi on the dev VM); ``min_rows`` is the batch size from
    which widening beats the native per-row path (crossover measured at 8–16 rows there)."""

    def __init__(self, device: torch.device, tile_elems: int = 1 << 20, min_rows: int = 8) -> None:
        self.tile_elems = tile_elems
        self.min_rows = min_rows
        self.scratch = torch.empty(tile_elems, dtype=torch.float32, device=device)

    def __call__(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        if w.dtype == torch.float32 or rows < self.min_rows:
            return F.linear(x, w, b)
        n_out, k = w.shape
        x_t = x.reshape(rows, k).float().t()  # [k, rows], a transposed view the GEMM takes as is
        out_t = torch.empty(n_out, rows, dtype=torch.float32, device=x.device)
        step = max(1, self.tile_elems // k)
        for i in range(0, n_out, step):
            n = min(step, n_out - i)
            tile = self.scratch[: n * k].view(n, k)
            tile.copy_(w[i:i + n])  # exact widening bf16/fp16 -> fp32
            torch.mm(tile, x_t, out=out_t[i:i + n])  # a row slice of out_t is contiguous
        if b is not None:
            out_t += b.float()[:, None]
        return out_t.t().to(x.dtype).reshape(*x.shape[:-1], n_out)


def has_native_gemm(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``F.linear`` in ``dtype`` runs as a real GEMM on ``device``."""
    if device.type != "cpu" or dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def make_linear(device: torch.device, dtype: torch.dtype, mode: str = "auto") -> tuple[LinearFn, str]:
    """The linear function for ``device``/``dtype`` and the name of the path taken
    (``native`` or ``upcast``); ``mode`` is one of :data:`GEMM_MODES`."""
    if mode not in GEMM_MODES:
        raise ValueError(f"unknown gemm mode {mode!r}; choose one of: {', '.join(GEMM_MODES)}")
    upcast = mode == "upcast" or (mode == "auto" and not has_native_gemm(device, dtype))
    if upcast and dtype != torch.float32:
        return TiledUpcastLinear(device), "upcast"
    return F.linear, "native"
