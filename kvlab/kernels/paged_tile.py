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
                   GROUP: tl.constexpr, HEAD_DIM: tl.constexpr):
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
        # scales are loaded at their own granularity and broadcast: one per head (fp8), per
        # position (int8), per position and group of GROUP channels (int4)
        srow = block * s_sb + row * s_ss + kvh * s_sh  # [BLOCK_N]
        if QUANT == 1 or QUANT == 2:
            ks = tl.load(ks_ptr + kvh * s_sh)
            vs = tl.load(vs_ptr + kvh * s_sh)
            if QUANT == 1:
                k = kc.to(tl.float8e4nv, bitcast=True).to(tl.float32) * ks
                v = vc.to(tl.float8e4nv, bitcast=True).to(tl.float32) * vs
            else:
                k = kc.to(tl.float8e5, bitcast=True).to(tl.float32) * ks
                v = vc.to(tl.float8e5, bitcast=True).to(tl.float32) * vs
        elif QUANT == 3:
            ks = tl.load(ks_ptr + srow, mask=n_mask, other=0.0)
            vs = tl.load(vs_ptr + srow, mask=n_mask, other=0.0)
            k = kc.to(tl.int8, bitcast=True).to(tl.float32) * ks[:, None]
            v = vc.to(tl.int8, bitcast=True).to(tl.float32) * vs[:, None]
        else:  # int4: [BLOCK_N, NG] scales and zeros, broadcast over each group's GROUP channels
            BLOCK_D: tl.constexpr = offs_d.shape[0]
            NG: tl.constexpr = BLOCK_D // GROUP
            offs_g = tl.arange(0, NG)
            g_mask = n_mask[:, None] & (offs_g[None, :] * GROUP < HEAD_DIM)
            soff = srow[:, None] + offs_g[None, :] * s_sg
            ks = tl.load(ks_ptr + soff, mask=g_mask, other=0.0)[:, :, None]
            vs = tl.load(vs_ptr + soff, mask=g_mask, other=0.0)[:, :, None]
            kz = tl.load(kz_ptr + soff, mask=g_mask, other=0.0)[:, :, None]
            vz = tl.load(vz_ptr + soff, mask=g_mask, other=0.0)[:, :, None]
            shift = ((offs_d % 2) * 4)[None, :]
            BLOCK_N: tl.constexpr = pos.shape[0]
            kq = tl.reshape(((kc.to(tl.int32) >> shift) & 15).to(tl.float32), (BLOCK_N, NG, GROUP))
            vq = tl.reshape(((vc.to(tl.int32) >> shift) & 15).to(tl.float32), (BLOCK_N, NG, GROUP))
            k = tl.reshape(kq * ks + kz, (BLOCK_N, BLOCK_D))
            v = tl.reshape(vq * vs + vz, (BLOCK_N, BLOCK_D))
    return k, v


@triton.jit
def attend_tile(q, k, v, visible, qk_scale, m_i, l_i, acc, DOT_F32: tl.constexpr, DOT_PREC: tl.constexpr):
    """One online-softmax step (base 2, fp32 state): scores of ``q`` [M, D] against the tile's ``k``
    [N, D], ``visible`` [M, N] (or broadcastable) masking the rest, then ``p @ v`` into ``acc``.
    Rows with nothing visible yet keep zero weight (their running max stays -inf). Returns the new
    (m_i, l_i, acc)."""
    if DOT_F32:  # fp32 math (mixed or fp32 inputs; the interpreter's bf16 dot is unreliable)
        s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision=DOT_PREC)
    else:  # 16-bit dots; a dequantized (fp32) tile is cast to the query's dtype first (a no-op otherwise)
        k = k.to(q.dtype)
        v = v.to(q.dtype)
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
