"""The one Triton helper both attention kernels share: load a tile of K and V through a block table.

Position ``p`` of a sequence lives in block ``table[p // BLOCK_SIZE]``, row ``p % BLOCK_SIZE``; a
tile is ``BLOCK_N`` consecutive positions, gathered row by row so that tiles need not align with
blocks and any block size works. Every load is masked by ``n_mask`` (positions past the context),
the block-table load included, so padding entries of a table are never read. Strides are
arguments: the caches may be strided views of a bigger tensor (one layer of the KV cache).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(bt_row, s_btb, k_ptr, v_ptr, s_kb, s_ks, s_kh, s_kd, s_vb, s_vs, s_vh, s_vd,
                 kvh, pos, n_mask, offs_d, d_mask, BLOCK_SIZE: tl.constexpr):
    """K and V tiles [BLOCK_N, BLOCK_D] of positions ``pos`` of KV head ``kvh`` (0 where masked)."""
    block = tl.load(bt_row + (pos // BLOCK_SIZE) * s_btb, mask=n_mask, other=0).to(tl.int64)
    row = (pos % BLOCK_SIZE).to(tl.int64)
    kv_mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(k_ptr + block[:, None] * s_kb + row[:, None] * s_ks + kvh * s_kh + offs_d[None, :] * s_kd,
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + block[:, None] * s_vb + row[:, None] * s_vs + kvh * s_vh + offs_d[None, :] * s_vd,
                mask=kv_mask, other=0.0)
    return k, v
