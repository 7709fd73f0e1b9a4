"""The CPU attention backend (``executor.attention_backend=cpu``; what ``auto`` picks on a CPU).

Same flat batch, metadata and KV writes as the torch reference (:mod:`kvlab.kernels.torch_backend`);
what differs is the decode group, which on a CPU is where a small batch's attention time went:

* A single decode sequence (batch-1 serving: the TPOT case) needs no padding mask: its K/V are cut
  to its length, and when its block table is one run of consecutive block ids (the contiguous
  allocator; a fresh paged pool) they are read as a slice of the cache: no gather copy at all.
* The padding mask of a batched decode group is built ONCE per step as an additive fp32 bias
  (``0`` / ``-inf``) in :meth:`CpuBackend.build_metadata`, and skipped when no row is padded.
* With kvlab's native CPU ops built (:mod:`kvlab.kernels.cpu_ops`: a C kernel, compiled on first
  use) an fp32 decode group is attended IN the block cache, one online-softmax pass per
  (sequence, KV head): no gather, no padding, no mask. Without them (no compiler, another dtype,
  ``KVLAB_CPU_OPS=0``) the group takes the torch path: the block gather (a copy of every
  sequence's K/V) and one SDPA; see docs/performance.md for what each costs.

Multi-token chunks (prefill) still go through the reference's per-chunk SDPA (long query blocks:
what the flash kernel is good at). Layers in a quantized KV format (a ``scheme``,
with or without per-block metadata) are handed to the reference backend whole, so a KV format
added there keeps working here; wiring a
format into this fast path means dequantizing the gathered blocks before the two matmuls.

Not thread-safe beyond what the reference is: stateless; all step state is in the metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from kvlab.kernels import cpu_ops
from kvlab.kernels.backend import SeqSpan
from kvlab.kernels.kv_cache import LayerKV
from kvlab.kernels.metadata import AttentionMetadata
from kvlab.kernels.paged_attention import paged_attention
from kvlab.kernels.torch_backend import TorchBackend


@dataclass
class CpuAttentionMetadata(AttentionMetadata):
    """The reference metadata plus what the CPU decode path reuses in every layer.

    ``decode_bias`` [D, 1, 1, C] fp32: 0 where a decode token may attend, -inf on padding (None
    when there is no padding, or one decode: ``decode_single_len`` then cuts its K/V to length).
    ``decode_run_start``: the first block id when the step has exactly one decode whose blocks are
    consecutive, else None.
    ``chunks_only``: a view of this metadata without the decode group, for the reference path.
    """

    decode_bias: torch.Tensor | None = None
    decode_run_start: int | None = None
    decode_num_blocks: int = 0
    decode_single_len: int = 0
    chunks_only: AttentionMetadata | None = None


def _consecutive(table: Sequence[int], n: int) -> bool:
    return n > 0 and len(table) >= n and all(table[i] == table[0] + i for i in range(n))


class CpuBackend:
    """Implements :class:`kvlab.kernels.backend.AttentionBackend` for CPUs (see the module docstring)."""

    name = "cpu"

    def __init__(self, native_ops: bool | None = None) -> None:
        """``native_ops``: use :mod:`kvlab.kernels.cpu_ops` for decode groups (None = where they build)."""
        self.ref = TorchBackend()
        self.native_ops = cpu_ops.load() is not None if native_ops is None else native_ops

    def build_metadata(self, seqs: Sequence[SeqSpan], block_size: int, device: torch.device) -> CpuAttentionMetadata:
        """The reference metadata, extended once per step with the decode bias / run and a
        decode-free view for the chunks."""
        base = self.ref.build_metadata(seqs, block_size, device)
        meta = CpuAttentionMetadata(**{f.name: getattr(base, f.name) for f in fields(AttentionMetadata)})
        nd = meta.num_decodes
        if nd:
            lens = meta.decode_context_lens
            assert lens is not None and meta.decode_mask is not None and meta.decode_block_tables is not None
            n_blocks = meta.decode_block_tables.shape[1]
            meta.decode_num_blocks = n_blocks
            cols = n_blocks * block_size
            if nd == 1:
                start, _, table = seqs[meta.order[0]]
                meta.decode_single_len = start + 1
                if _consecutive(table, n_blocks):
                    meta.decode_run_start = int(table[0])
            elif bool((lens < cols).any()):
                bias = torch.zeros(nd, 1, 1, cols, dtype=torch.float32, device=device)
                meta.decode_bias = bias.masked_fill_(~meta.decode_mask, float("-inf"))
        meta.chunks_only = replace(base, num_decodes=0) if meta.chunks else None
        return meta

    def write_kv(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
        """Scatter the new K/V into the layer's cache (the reference's write). Mutates the cache."""
        self.ref.write_kv(layer, k, v, meta)

    def forward(self, layer: LayerKV, q: torch.Tensor, meta: CpuAttentionMetadata, scale: float) -> torch.Tensor:
        """Attention of the flat batch ``q`` [tokens, heads, head_dim] over one layer. Pure."""
        # a quantized KV format (the reference path knows how to read it; fp8 with fixed scales
        # has a scheme but no per-block metadata), or metadata built by the generic builder
        # rather than by this backend: the reference
        if layer.scheme is not None or layer.metadata or not isinstance(meta, CpuAttentionMetadata):
            return self.ref.forward(layer, q, meta, scale)
        nd = meta.num_decodes
        if meta.chunks_only is not None:
            out = paged_attention(q, layer.k, layer.v, meta.chunks_only, scale)
        else:
            out = torch.empty_like(q)
        if nd:
            o = None
            if self.native_ops:
                assert meta.decode_block_tables is not None and meta.decode_context_lens is not None
                o = cpu_ops.paged_decode(q[:nd], layer.k, layer.v, meta.decode_block_tables,
                                         meta.decode_context_lens, scale)
            if o is None:  # no native op for this dtype/shape: the torch path
                o = decode_attention(q[:nd], layer.k, layer.v, meta, scale)
            out[:nd] = o.to(out.dtype)
        return out


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     meta: CpuAttentionMetadata, scale: float) -> torch.Tensor:
    """One query token per sequence: q [D, H, hd] over the decode group's blocks -> [D, H, hd].

    One SDPA over [D, kvh, g, hd] queries (the g query heads of a KV head are its query rows) and
    [D, kvh, C, hd] keys/values read in the cache's own layout (transposed views, no copy besides
    the block gather). Measured on the AVX2 dev VM, CPU SDPA beat batched matmul / einsum
    formulations of the same product (their strided operands cost a copy each)."""
    nd, H, hd = q.shape
    B, kvh = k_cache.shape[1], k_cache.shape[2]
    g = H // kvh
    if meta.decode_run_start is not None:  # one sequence, consecutive blocks: a view, no copy
        s, n = meta.decode_run_start, meta.decode_num_blocks
        k = k_cache[s:s + n].view(1, n * B, kvh, hd)
        v = v_cache[s:s + n].view(1, n * B, kvh, hd)
    else:
        tables = meta.decode_block_tables
        assert tables is not None
        idx = tables.reshape(-1)
        k = k_cache.index_select(0, idx).view(nd, -1, kvh, hd)
        v = v_cache.index_select(0, idx).view(nd, -1, kvh, hd)
    mask = meta.decode_bias
    if meta.decode_single_len:  # one sequence: cut the tail of its last block instead of masking it
        k, v, mask = k[:, :meta.decode_single_len], v[:, :meta.decode_single_len], None
    qd = q.view(nd, kvh, g, hd).to(k.dtype)
    o = F.scaled_dot_product_attention(qd, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    return o.reshape(nd, H, hd)
