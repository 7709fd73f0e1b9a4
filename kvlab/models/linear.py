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

:class:`PackedLinear` (``gemm=packed``) is the fp32 path through oneDNN with every weight reordered
ONCE, at model load, into oneDNN's blocked layout (what Inductor's CPU "weight prepack" does).
Why: torch's fp32 ``F.linear`` calls MKL's sgemm, which on the AMD dev VM reached a third of
oneDNN's rate on the model's shapes (16 rows x a [3072, 576] weight: 1.07 vs 0.76 ms, cached; 16
streaming weights at 16 rows: 29.8 vs 11.7 ms; 2 threads, quiet machine). The sums run in another
order, so results differ from ``F.linear`` in the last bits (~4e-6 relative). Whether it is faster
on a given machine is measured, not assumed (:mod:`kvlab.executor.precision`).

A linear object may have ``prepare(w) -> w'``: the model calls it once per weight matrix at load
and passes the prepared weight on every call (:func:`prepare_weight`).

Not thread-safe: one instance owns one scratch buffer, and one executor runs one forward at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LinearFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
GEMM_MODES = ("auto", "native", "upcast", "packed")


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


class PackedLinear:
    """fp32 ``F.linear`` through oneDNN on weights prepacked by :meth:`prepare` (module docstring).
    A weight that was not prepared (another dtype, another device) takes ``F.linear``."""

    def prepare(self, w: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's blocked layout (a new tensor; ``w`` is not kept)."""
        if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2:
            return w
        return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None)

    def __call__(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if not w.is_mkldnn:
            return F.linear(x, w, b)
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def packed_gemm_available() -> bool:
    """Whether this torch build can prepack fp32 weights for oneDNN (CPU builds with mkldnn)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def prepare_weight(linear: LinearFn, w: torch.Tensor | None) -> torch.Tensor | None:
    """``linear.prepare(w)`` where the linear path has one (:class:`PackedLinear`), else ``w``."""
    prepare = getattr(linear, "prepare", None)
    return w if w is None or prepare is None else prepare(w)


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
    (``native``, ``upcast`` or ``packed``); ``mode`` is one of :data:`GEMM_MODES`. ``packed`` is
    taken only for fp32 on a CPU whose torch has oneDNN (elsewhere it falls back to ``native``);
    ``auto`` here never packs: the executor measures and asks for ``packed`` explicitly."""
    if mode not in GEMM_MODES:
        raise ValueError(f"unknown gemm mode {mode!r}; choose one of: {', '.join(GEMM_MODES)}")
    if mode == "packed":
        if device.type == "cpu" and dtype == torch.float32 and packed_gemm_available():
            return PackedLinear(), "packed"
        return F.linear, "native"
    upcast = mode == "upcast" or (mode == "auto" and not has_native_gemm(device, dtype))
    if upcast and dtype != torch.float32:
        return TiledUpcastLinear(device), "upcast"
    return F.linear, "native"
