"""Matmuls that read the checkpoint's own GGUF blocks for small batches (``executor.weight_blocks``).

A decode step of a few sequences is a matrix-vector product: its time is the bytes of weights
read. The fp32 model reads 540 MB per step; the same matrices as the checkpoint stores them
(Q4_1 layers, Q8_0 lm_head: :mod:`kvlab.models.gguf_blocks`) are ~96 MB, and
:func:`kvlab.kernels.cpu_ops.qgemm` multiplies them with the products of the fp32 model up to
summation order. Large batches (prefill) are compute-bound, where a blocked fp32 GEMM wins, so
:class:`BlockLinear` routes by the number of rows: up to ``max_rows`` the blocks, above it the
wrapped dense path (plain or oneDNN-prepacked fp32; both copies are kept: ~96 MB more).

``max_rows`` is decided where the executor is built (:func:`crossover_rows`: the largest batch
at which the block matmul measured faster than the dense path on the model's own matrices, more
of them than fit in the last-level cache) or set explicitly (``executor.weight_blocks=N``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kvlab.kernels import cpu_ops
from kvlab.models.gguf_blocks import BlockWeight
from kvlab.models.linear import LinearFn, prepare_weight

CHECK_ROWS = (1, 2, 4, 8, 16, 32, 64)
_BLOCKS: dict[tuple, dict[str, BlockWeight]] = {}
_CROSSOVER: dict[tuple, tuple[int, dict]] = {}


@dataclass
class BlockBacked:
    """A matmul weight held twice: ``dense`` for the dense path (as that path prepared it) and
    ``block`` as the checkpoint stores it."""

    dense: torch.Tensor
    block: BlockWeight


class BlockLinear:
    """``linear(x, w, b)``: rows <= ``max_rows`` and a :class:`BlockBacked` weight -> the block
    matmul; anything else -> ``dense`` (module docstring). Not thread-safe beyond ``dense``."""

    def __init__(self, dense: LinearFn, max_rows: int) -> None:
        self.dense = dense
        self.max_rows = max_rows

    def prepare(self, w: torch.Tensor) -> torch.Tensor:
        return prepare_weight(self.dense, w)  # type: ignore[return-value]

    def attach(self, w: Any, block: BlockWeight | None) -> Any:
        """``w`` (prepared) backed by ``block`` where the shapes agree, else ``w``."""
        shape = getattr(w, "shape", None)
        if block is None or shape is None or tuple(shape) != (block.rows, block.cols):
            return w
        return BlockBacked(w, block)

    def __call__(self, x: torch.Tensor, w: Any, b: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(w, BlockBacked):
            return self.dense(x, w, b)
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        if rows <= self.max_rows:
            blk = w.block
            y = cpu_ops.qgemm(x.reshape(rows, blk.cols), blk.fmt, blk.data, blk.rows, blk.cols)
            if y is not None:
                if b is not None:
                    y += b
                return y.reshape(*x.shape[:-1], blk.rows)
        return self.dense(x, w.dense, b)


def crossover_rows(dense: LinearFn, weights: Mapping[str, torch.Tensor], blocks: Mapping[str, BlockWeight],
                   names: Sequence[str], rows: Sequence[int] = CHECK_ROWS, reps: int = 3) -> tuple[int, dict]:
    """The largest batch in ``rows`` (checked in order, stopping at the first loss) at which the
    block matmul over the matrices ``names`` takes less time than ``dense`` on the same
    (prepared) matrices; 0 where it never wins. Best of ``reps``, on ONE thread (on 2 shared cores
    a 2-thread timing stalls whenever another process takes a core: a 2-row check once read 60 ms
    vs 2.8 ms quiet); returns (rows, {rows: [block ms, dense ms]}). One pass over every matrix
    streams them from memory, as a decode step does."""
    prepared = [(prepare_weight(dense, weights[n]), blocks[n]) for n in names if n in blocks]
    if not prepared or cpu_ops.load() is None:
        return 0, {}
    gen = torch.Generator().manual_seed(0)
    best, times = 0, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1-thread ratio: far less disturbed by other processes than a team
    try:
        for r in rows:
            x = torch.randn(r, prepared[0][1].cols, generator=gen)
            t_block = _best(lambda x=x: [cpu_ops.qgemm(x, b.fmt, b.data, b.rows, b.cols) for _, b in prepared], reps)
            t_dense = _best(lambda x=x: [dense(x, w, None) for w, _ in prepared], reps)
            times[r] = [round(t_block * 1e3, 3), round(t_dense * 1e3, 3)]
            if t_block >= t_dense:
                break
            best = r
    finally:
        torch.set_num_threads(threads)
    return best, times


def _best(fn: Any, reps: int) -> float:
    fn()  # warm-up
    out = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def blocks_off_reason(setting: str | int, model_cfg: Mapping[str, Any], device: torch.device,
                      dtype: torch.dtype) -> str | None:
    """Why matmuls over the GGUF blocks cannot run for this model here (``"off (...)"``), or None
    when they can (``auto`` still measures whether they are faster)."""
    from kvlab.models.loader import GGUF_CHECKPOINTS

    if setting == "off":
        return "off (executor.weight_blocks=off)"
    if device.type != "cpu" or dtype != torch.float32:
        return "off (fp32 on a CPU only)"
    if model_cfg.get("checkpoint") not in GGUF_CHECKPOINTS:
        return "off (the checkpoint is not a GGUF file)"
    if cpu_ops.load() is None:
        return f"off (kvlab CPU ops: {cpu_ops.status()})"
    return None


def plan_weight_blocks(setting: str | int, model_cfg: Mapping[str, Any], arch: Any, weights: Mapping[str, torch.Tensor],
                       dense: LinearFn, device: torch.device, dtype: torch.dtype
                       ) -> tuple[LinearFn, dict[str, BlockWeight] | None, str]:
    """``executor.weight_blocks`` (``auto``, ``off`` or a row count) -> (linear, blocks, why).

    On only for fp32 on a CPU, a GGUF checkpoint and built CPU ops; ``auto`` then measures
    :func:`crossover_rows` on the model's first gate/up matrices (eight of them: 56 MB of fp32)."""
    from kvlab.models.gguf_blocks import load_gguf_blocks
    from kvlab.models.loader import gguf_path

    off = blocks_off_reason(setting, model_cfg, device, dtype)
    if off is not None:
        return dense, None, off
    path = gguf_path(str(model_cfg["checkpoint"]))
    key = (str(path), path.stat().st_size, arch.num_layers, arch.hidden_size)
    if key not in _BLOCKS:  # read-only tensors: every executor of the process shares one copy
        _BLOCKS[key] = load_gguf_blocks(path, arch)
    blocks = _BLOCKS[key]
    if not blocks:
        return dense, None, "off (no Q4_1/Q8_0 matrices in the checkpoint)"
    mb = sum(b.nbytes for b in blocks.values()) / 1e6
    if setting == "auto":
        names = [f"{i}.gate_up" for i in range(min(8, arch.num_layers))]
        ckey = (*key, getattr(dense, "__name__", type(dense).__name__), torch.get_num_threads())
        if ckey not in _CROSSOVER:  # measured once per process, dense path and thread count
            _CROSSOVER[ckey] = crossover_rows(dense, weights, blocks, names)
        max_rows, times = _CROSSOVER[ckey]
        if max_rows == 0:
            return dense, None, f"off (block matmul measured slower than the dense path at 1 row: {times})"
        why = f"measured faster up to {max_rows} rows, ms block/dense by rows {times}"
    else:
        max_rows, why = int(setting), "set explicitly"
    fmts = "/".join(sorted({b.fmt for b in blocks.values()}))
    return BlockLinear(dense, max_rows), blocks, f"{fmts} blocks ({mb:.0f} MB) for steps of <= {max_rows} rows ({why})"
