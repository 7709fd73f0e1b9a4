"""Paged attention in plain PyTorch (the reference; CPU execution uses it).

Reads each sequence's context through its block table: the decode group is gathered block-wise
in one ``index_select`` (padded to the longest context, masked) and runs as one batched SDPA in
which the query heads sharing a KV head act as extra query rows (GQA without expanding K/V);
each multi-token chunk gathers its own blocks and runs SDPA with a causal mask offset by its
start position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kvlab.kernels.metadata import AttentionMetadata

# read(blocks [..., n] long, half 0=K|1=V) -> [..., n * block_size, kv_heads, head_dim] (a quantized
# format's dequantizing gather, :meth:`kvlab.kernels.quant.base.QuantScheme.read`)
ReadFn = Callable[[torch.Tensor, int], torch.Tensor]


def _gather(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """cache [num_blocks, B, kvh, hd] rows ``blocks`` (any shape [..., n]) -> [..., n * B, kvh, hd]."""
    flat = cache.index_select(0, blocks.reshape(-1))
    return flat.view(*blocks.shape[:-1], blocks.shape[-1] * cache.shape[1], *cache.shape[2:])


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float, read: ReadFn | None = None) -> torch.Tensor:
    """Attention of ``q`` [tokens, heads, head_dim] over one layer's paged caches
    ([num_blocks, block_size, kv_heads, head_dim]); returns [tokens, heads, head_dim].

    ``read`` replaces the plain block gather for a quantized cache (dequantize on read). The new
    tokens' K/V must already be in the cache (``write_kv`` first). Pure: no mutation.
    """
    if read is None:
        def read(blocks: torch.Tensor, half: int) -> torch.Tensor:
            return _gather(k_cache if half == 0 else v_cache, blocks)
    T, H, D = q.shape
    kvh = k_cache.shape[2]
    g = H // kvh
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        k = read(meta.decode_block_tables, 0).transpose(1, 2)  # [nd, kvh, C, hd]
        v = read(meta.decode_block_tables, 1).transpose(1, 2)
        qd = q[:nd].view(nd, kvh, g, D).to(k.dtype)
        o = F.scaled_dot_product_attention(qd, k, v, attn_mask=meta.decode_mask, scale=scale)
        out[:nd] = o.reshape(nd, H, D)
    for c in meta.chunks:
        k = read(c.blocks, 0)[: c.context_len].transpose(0, 1)  # [kvh, ctx, hd]
        v = read(c.blocks, 1)[: c.context_len].transpose(0, 1)
        qc = q[c.offset: c.offset + c.num_tokens].transpose(0, 1).to(k.dtype)  # [H, n, hd]
        o = F.scaled_dot_product_attention(
            qc, k, v, attn_mask=c.mask, is_causal=c.mask is None, scale=scale, enable_gqa=g > 1
        )
        out[c.offset: c.offset + c.num_tokens] = o.transpose(0, 1)
    return out
