"""The Triton helpers both attention kernels share: load a tile of K and V through a block table,
and fold one tile into an online (flash) softmax.

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


@triton.jit
def load_kv_tile_q(bt_row, s_btb, k_ptr, v_ptr, s_kb, s_ks, s_kh, s_kd, s_vb, s_vs, s_vh, s_vd,
                   ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg,
                   kvh, pos, n_mask, offs_d, d_mask, BLOCK_SIZE: tl.constexpr, QUANT: tl.constexpr,
                   GROUP: tl.constexpr):
    """:func:`load_kv_tile` with the dequantization fused (``QUANT``: 0 none, 1 fp8 e4m3, 2 fp8 e5m2,
    3 int8, 4 int4 packed two per byte, see :mod:`kvlab.kernels.quant.fused`). Returns fp32 tiles
    (the cache dtype when ``QUANT`` is 0)."""
    if QUANT == 0:
        k, v = load_kv_tile(bt_row, s_btb, k_ptr, v_ptr, s_kb, s_ks, s_kh, s_kd, s_vb, s_vs, s_vh, s_vd,
                            kvh, pos, n_mask, offs_d, d_mask, BLOCK_SIZE)
    else:
        block = tl.load(bt_row + (pos // BLOCK_SIZE) * s_btb, mask=n_mask, other=0).to(tl.int64)
        row = (pos % BLOCK_SIZE).to(tl.int64)
        kv_mask = n_mask[:, None] & d_mask[None, :]
        if QUANT == 4:
            col = offs_d // 2
        else:
            col = offs_d
        kc = tl.load(k_ptr + block[:, None] * s_kb + row[:, None] * s_ks + kvh * s_kh + col[None, :] * s_kd,
                     mask=kv_mask, other=0)
        vc = tl.load(v_ptr + block[:, None] * s_vb + row[:, None] * s_vs + kvh * s_vh + col[None, :] * s_vd,
                     mask=kv_mask, other=0)
        soff = block[:, None] * s_sb + row[:, None] * s_ss + kvh * s_sh + (offs_d // GROUP)[None, :] * s_sg
        ks = tl.load(ks_ptr + soff, mask=kv_mask, other=0.0)
        vs = tl.load(vs_ptr + soff, mask=kv_mask, other=0.0)
        if QUANT == 1:
            k = kc.to(tl.float8e4nv, bitcast=True).to(tl.float32) * ks
            v = vc.to(tl.float8e4nv, bitcast=True).to(tl.float32) * vs
        elif QUANT == 2:
            k = kc.to(tl.float8e5, bitcast=True).to(tl.float32) * ks
            v = vc.to(tl.float8e5, bitcast=True).to(tl.float32) * vs
        elif QUANT == 3:
            k = kc.to(tl.int8, bitcast=True).to(tl.float32) * ks
            v = vc.to(tl.int8, bitcast=True).to(tl.float32) * vs
        else:
            shift = ((offs_d % 2) * 4)[None, :]
            kz = tl.load(kz_ptr + soff, mask=kv_mask, other=0.0)
            vz = tl.load(vz_ptr + soff, mask=kv_mask, other=0.0)
            k = ((kc.to(tl.int32) >> shift) & 15).to(tl.float32) * ks + kz
            v = ((vc.to(tl.int32) >> shift) & 15).to(tl.float32) * vs + vz
    return k, v


@triton.jit
def attend_tile(q, k, v, visible, qk_scale, m_i, l_i, acc, DOT_F32: tl.constexpr, DOT_PREC: tl.constexpr):
    """One online-softmax step (base 2, fp32 state): scores of ``q`` [M, D] against the tile's ``k``
    [N, D], ``visible`` [M, N] (or broadcastable) masking the rest, then ``p @ v`` into ``acc``.
    Rows with nothing visible yet keep zero weight (their running max stays -inf). Returns the new
    (m_i, l_i, acc)."""
    if DOT_F32:  # fp32 math (mixed or fp32 inputs; the interpreter's bf16 dot is unreliable)
        s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision=DOT_PREC)
    else:
        s = tl.dot(q, tl.trans(k))
    s = tl.where(visible, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    if DOT_F32:
        pv = tl.dot(p, v.to(tl.float32), input_precision=DOT_PREC)
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc * alpha[:, None] + pv
