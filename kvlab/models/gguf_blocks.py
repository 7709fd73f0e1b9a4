"""A GGUF checkpoint's matrices as they are stored: Q4_1 / Q8_0 blocks, in kvlab's fused layout.

Why: the SmolLM2 checkpoint kvlab ships (``checkpoint: smollm2-gguf``) IS quantized: every layer
matrix is Q4_1 (32 weights = fp16 scale ``d`` + fp16 minimum ``m`` + 16 bytes of 4-bit codes, 5
bits per weight) and the tied embedding / lm_head is Q8_0 (fp16 ``d`` + 32 int8). The fp32 model
that :mod:`kvlab.models.loader` builds holds exactly ``d * q + m`` (``q * d``) of those blocks, at
4-6x the bytes: 540 MB read per decoded token instead of ~96 MB. A matmul that reads the blocks
and dequantizes in registers (:mod:`kvlab.kernels.cpu_ops`, ``qgemm.c``) computes the SAME
products as the fp32 model up to summation order, at a fraction of the memory traffic.

:func:`load_gguf_blocks` maps GGUF names to kvlab's layout exactly as the fp32 path does: q/k/v
rows concatenated into ``qkv`` (q and k rows un-permuted the way transformers' GGUF loader
un-permutes them for RoPE), gate/up into ``gate_up``, and ``lm_head`` from ``token_embd`` when the
embedding is tied. Rows are independent in both formats (blocks run along the input dimension), so
fusing and permuting matrices is fusing and permuting rows of bytes. :func:`dequantize` is the
torch reference the tests hold the kernel and this mapping to (bit-equal to the fp32 weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvlab.models.config import ArchConfig

BLOCK = 32
BYTES_PER_BLOCK = {"Q4_1": 20, "Q8_0": 34}


@dataclass
class BlockWeight:
    """One matrix in a block format: ``data`` [rows, K/32 * bytes_per_block] uint8, rows = outputs."""

    fmt: str
    data: torch.Tensor
    rows: int
    cols: int

    @property
    def nbytes(self) -> int:
        return self.data.numel()


def _rows(reader_tensor: Any) -> torch.Tensor:
    """The tensor's raw GGUF blocks, one byte row per weight row."""
    arr = np.asarray(reader_tensor.data)
    # a copy: the reader memory-maps the file read-only, and the blocks outlive the reader
    return torch.from_numpy(np.array(arr, copy=True)).view(torch.uint8).reshape(arr.shape[0], -1)


def _rope_unpermute(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp stores q/k rows permuted for its RoPE; undo it (the row order transformers uses)."""
    n = rows.shape[0]
    dim = n // n_head // 2
    perm = torch.arange(n).view(n_head, dim, 2).transpose(1, 2).reshape(-1)
    return rows[perm]


def load_gguf_blocks(path: str | Path, arch: ArchConfig) -> dict[str, BlockWeight]:
    """The block matrices of a GGUF file in kvlab's layout: ``{i}.qkv``, ``{i}.o``, ``{i}.gate_up``,
    ``{i}.down`` and ``lm_head``. A matrix in any other format (F16, K-quants, ...) is left out:
    its layer keeps the dense path. Raises ``ValueError`` when shapes do not match ``arch``."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str, rows: int, cols: int) -> BlockWeight | None:
        t = tensors.get(name)
        if t is None or t.tensor_type.name not in BYTES_PER_BLOCK:
            return None
        fmt = t.tensor_type.name
        data = _rows(t)
        if data.shape != (rows, cols // BLOCK * BYTES_PER_BLOCK[fmt]):
            raise ValueError(f"{path}: {name} has {tuple(data.shape)} bytes, expected {rows} rows of {cols} weights")
        return BlockWeight(fmt, data, rows, cols)

    def fuse(parts: list[BlockWeight | None]) -> BlockWeight | None:
        if any(p is None for p in parts) or len({p.fmt for p in parts}) != 1:  # type: ignore[union-attr]
            return None
        data = torch.cat([p.data for p in parts], dim=0)  # type: ignore[union-attr]
        return BlockWeight(parts[0].fmt, data.contiguous(), data.shape[0], parts[0].cols)  # type: ignore[union-attr]

    a, h = arch, arch.hidden_size
    q_rows, kv_rows = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    out: dict[str, BlockWeight] = {}
    for i in range(a.num_layers):
        p = f"blk.{i}."
        q, k = get(p + "attn_q.weight", q_rows, h), get(p + "attn_k.weight", kv_rows, h)
        if q is not None:
            q.data = _rope_unpermute(q.data, a.num_heads)
        if k is not None:
            k.data = _rope_unpermute(k.data, a.num_kv_heads)
        mats = {"qkv": fuse([q, k, get(p + "attn_v.weight", kv_rows, h)]),
                "o": get(p + "attn_output.weight", h, q_rows),
                "gate_up": fuse([get(p + "ffn_gate.weight", a.ffn_size, h), get(p + "ffn_up.weight", a.ffn_size, h)]),
                "down": get(p + "ffn_down.weight", h, a.ffn_size)}
        out.update({f"{i}.{k}": v for k, v in mats.items() if v is not None})
    head = get("output.weight", a.vocab_size, h)
    if head is None and a.tie_word_embeddings:
        head = get("token_embd.weight", a.vocab_size, h)
    if head is not None:
        out["lm_head"] = head
    return out


def dequantize(w: BlockWeight) -> torch.Tensor:
    """[rows, cols] fp32, computed as the gguf package does (``d * q + m``; ``q * d``) — the values
    the fp32 model holds."""
    nb = w.cols // BLOCK
    blocks = w.data.view(w.rows, nb, BYTES_PER_BLOCK[w.fmt])
    d = blocks[..., 0:2].contiguous().view(torch.float16).float()
    if w.fmt == "Q4_1":
        m = blocks[..., 2:4].contiguous().view(torch.float16).float()
        qs = blocks[..., 4:20].to(torch.int32)
        q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).float()  # codes 0-15 low nibbles, 16-31 high
        return (d * q + m).reshape(w.rows, w.cols)
    q = blocks[..., 2:34].contiguous().view(torch.int8).float()
    return (q * d).reshape(w.rows, w.cols)
