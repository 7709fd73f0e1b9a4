"""Scatter new K/V into one layer's paged caches by slot mapping, in Triton.

Grid ``(num_tokens,)``: one program stores one token's ``[kv_heads, head_dim]`` K and V tiles at
``slot = block * block_size + offset`` (cast to the cache dtype). A negative slot means "skip"
(padding tokens). Caches may be strided views. The torch reference is
:func:`kvlab.kernels.cache_ops.write_kv`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvlab.kernels.quant.fused import FusedQuant
from kvlab.kernels.triton_utils import check, check_tensor, next_pow2


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr,
    s_kt, s_kh, s_kd, s_vt, s_vh, s_vd,
    s_kcb, s_kcs, s_kch, s_kcd, s_vcb, s_vcs, s_vch, s_vcd,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    block = slot // BLOCK_SIZE
    row = slot % BLOCK_SIZE
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    keep = (offs_h * 0 + slot) >= 0  # a negative slot skips the token (as a tensor: scalar masks break the interpreter)
    mask = (offs_h[:, None] < KV_HEADS) & (offs_d[None, :] < HEAD_DIM) & keep[:, None]
    k = tl.load(k_ptr + t * s_kt + offs_h[:, None] * s_kh + offs_d[None, :] * s_kd, mask=mask)
    v = tl.load(v_ptr + t * s_vt + offs_h[:, None] * s_vh + offs_d[None, :] * s_vd, mask=mask)
    tl.store(kc_ptr + block * s_kcb + row * s_kcs + offs_h[:, None] * s_kch + offs_d[None, :] * s_kcd,
             k.to(kc_ptr.dtype.element_ty), mask=mask)
    tl.store(vc_ptr + block * s_vcb + row * s_vcs + offs_h[:, None] * s_vch + offs_d[None, :] * s_vcd,
             v.to(vc_ptr.dtype.element_ty), mask=mask)


def write_kv_triton(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """Store ``k``, ``v`` ([T, kv_heads, D]) at ``slot_mapping`` (int32/int64 [T], negative = skip) of
    one layer's caches ([num_blocks, block_size, kv_heads, D], strided views allowed). Mutates the
    caches; slots must be distinct (two tokens writing one slot race)."""
    dev = k.device
    check_tensor("k", k, 3, dev)
    check_tensor("v", v, 3, dev)
    check_tensor("k_cache", k_cache, 4, dev)
    check_tensor("v_cache", v_cache, 4, dev)
    check_tensor("slot_mapping", slot_mapping, 1, dev, (torch.int32, torch.int64))
    T, kvh, D = k.shape
    check(v.shape == k.shape, f"v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    check(k_cache.shape == v_cache.shape, f"v_cache shape {tuple(v_cache.shape)} != k_cache {tuple(k_cache.shape)}")
    check(tuple(k_cache.shape[2:]) == (kvh, D),
          f"cache [num_blocks, block_size, kv_heads, head_dim] = {tuple(k_cache.shape)} "
          f"does not fit k {tuple(k.shape)}")
    check(slot_mapping.shape[0] == T, f"slot_mapping has {slot_mapping.shape[0]} entries for {T} tokens")
    if T == 0:
        return
    _write_kv_kernel[(T,)](
        k, v, k_cache, v_cache, slot_mapping, *k.stride(), *v.stride(), *k_cache.stride(), *v_cache.stride(),
        KV_HEADS=kvh, HEAD_DIM=D, BLOCK_SIZE=k_cache.shape[1], BLOCK_H=next_pow2(kvh), BLOCK_D=next_pow2(D),
        num_warps=4)


@triton.jit
def _quant_store(x, c_ptr, sc_ptr, z_ptr, base_c, s_cd, base_s, s_sh, s_sg, offs_h, offs_j, h_mask,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, QUANT: tl.constexpr, GROUP: tl.constexpr,
                 FMAX: tl.constexpr):
    """Quantize one token's ``x`` [BLOCK_H, BLOCK_D] (int4: ``x`` is the (even, odd) pair) and store
    codes (and per-token scales) at ``base_c`` / ``base_s``."""
    if QUANT == 1 or QUANT == 2:
        mask = h_mask[:, None] & (offs_j[None, :] < HEAD_DIM)
        s = tl.load(sc_ptr + offs_h * s_sh, mask=h_mask, other=1.0)
        y = tl.minimum(tl.maximum(x / s[:, None], -FMAX), FMAX)
        # round onto the fp8 grid explicitly (as kvlab.kernels.quant.fp8.round_to_fp8_grid), so the
        # cast below is exact everywhere (the interpreter's own rounding drops exponent carries)
        if QUANT == 1:
            EMIN: tl.constexpr = -6
            MBITS: tl.constexpr = 3
        else:
            EMIN: tl.constexpr = -14
            MBITS: tl.constexpr = 2
        e = ((y.to(tl.int32, bitcast=True) >> 23) & 255) - 127
        step = ((tl.maximum(e, EMIN) - MBITS + 127) << 23).to(tl.float32, bitcast=True)
        y = tl.minimum(tl.maximum(tl.floor(y / step + 0.5) * step, -FMAX), FMAX)
        if QUANT == 1:
            c = y.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
        else:
            c = y.to(tl.float8e5).to(tl.uint8, bitcast=True)
        tl.store(c_ptr + base_c + offs_h[:, None] * 0 + offs_j[None, :] * s_cd, c, mask=mask)
    elif QUANT == 3:
        mask = h_mask[:, None] & (offs_j[None, :] < HEAD_DIM)
        scale = tl.max(tl.abs(x), 1) / 127.0
        safe = tl.where(scale > 0, scale, 1.0)
        q = tl.floor(x / safe[:, None] + 0.5)
        q = tl.minimum(tl.maximum(q, -127.0), 127.0)
        c = q.to(tl.int8).to(tl.uint8, bitcast=True)
        tl.store(c_ptr + base_c + offs_j[None, :] * s_cd, c, mask=mask)
        tl.store(sc_ptr + base_s + offs_h * s_sh, scale, mask=h_mask)


@triton.jit
def _write_kv_quant_kernel(
    k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr,
    ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg,
    s_kt, s_kh, s_kd, s_vt, s_vh, s_vd,
    s_kcb, s_kcs, s_kch, s_kcd, s_vcb, s_vcs, s_vch, s_vcd,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, QUANT: tl.constexpr, GROUP: tl.constexpr, FMAX: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    block = slot // BLOCK_SIZE
    row = slot % BLOCK_SIZE
    offs_h = tl.arange(0, BLOCK_H)
    keep = (offs_h * 0 + slot) >= 0  # negative slot: skip (a tensor mask, as in _write_kv_kernel)
    h_mask = (offs_h < KV_HEADS) & keep
    base_s = block * s_sb + row * s_ss
    if QUANT == 4:
        # int4: even and odd channels as two [BLOCK_H, HEAD_DIM/2] tiles, groups of GROUP channels
        HALF: tl.constexpr = HEAD_DIM // 2
        NG: tl.constexpr = HEAD_DIM // GROUP
        offs_j = tl.arange(0, HALF)
        offs_g = tl.arange(0, NG)
        m = h_mask[:, None] & (offs_j[None, :] < HALF)
        for half in tl.static_range(2):
            if half == 0:
                src, s_t, s_h, s_d = k_ptr, s_kt, s_kh, s_kd
                dst, s_b, s_s, s_ch, s_cd = kc_ptr, s_kcb, s_kcs, s_kch, s_kcd
                sc, zp = ks_ptr, kz_ptr
            else:
                src, s_t, s_h, s_d = v_ptr, s_vt, s_vh, s_vd
                dst, s_b, s_s, s_ch, s_cd = vc_ptr, s_vcb, s_vcs, s_vch, s_vcd
                sc, zp = vs_ptr, vz_ptr
            base = src + t * s_t + offs_h[:, None] * s_h
            xe = tl.load(base + (2 * offs_j)[None, :] * s_d, mask=m, other=0.0).to(tl.float32)
            xo = tl.load(base + (2 * offs_j + 1)[None, :] * s_d, mask=m, other=0.0).to(tl.float32)
            ge = tl.reshape(xe, (BLOCK_H, NG, GROUP // 2))
            go = tl.reshape(xo, (BLOCK_H, NG, GROUP // 2))
            mn = tl.minimum(tl.min(ge, 2), tl.min(go, 2))
            mx = tl.maximum(tl.max(ge, 2), tl.max(go, 2))
            scale = (mx - mn) / 15.0
            safe = tl.where(scale > 0, scale, 1.0)
            ce = tl.floor((ge - mn[:, :, None]) / safe[:, :, None] + 0.5)
            co = tl.floor((go - mn[:, :, None]) / safe[:, :, None] + 0.5)
            ce = tl.minimum(tl.maximum(ce, 0.0), 15.0).to(tl.int32)
            co = tl.minimum(tl.maximum(co, 0.0), 15.0).to(tl.int32)
            packed = tl.reshape(ce | (co << 4), (BLOCK_H, HALF)).to(tl.uint8)
            tl.store(dst + block * s_b + row * s_s + offs_h[:, None] * s_ch + offs_j[None, :] * s_cd, packed, mask=m)
            gm = h_mask[:, None] & (offs_g[None, :] < NG)
            soff = base_s + offs_h[:, None] * s_sh + offs_g[None, :] * s_sg
            tl.store(sc + soff, scale, mask=gm)
            tl.store(zp + soff, mn, mask=gm)
    else:
        offs_d = tl.arange(0, BLOCK_D)
        m = h_mask[:, None] & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptr + t * s_kt + offs_h[:, None] * s_kh + offs_d[None, :] * s_kd, mask=m, other=0.0)
        v = tl.load(v_ptr + t * s_vt + offs_h[:, None] * s_vh + offs_d[None, :] * s_vd, mask=m, other=0.0)
        _quant_store(k.to(tl.float32), kc_ptr, ks_ptr, kz_ptr, block * s_kcb + row * s_kcs + offs_h[:, None] * s_kch,
                     s_kcd, base_s, s_sh, s_sg, offs_h, offs_d, h_mask, HEAD_DIM, BLOCK_D, QUANT, GROUP, FMAX)
        _quant_store(v.to(tl.float32), vc_ptr, vs_ptr, vz_ptr, block * s_vcb + row * s_vcs + offs_h[:, None] * s_vch,
                     s_vcd, base_s, s_sh, s_sg, offs_h, offs_d, h_mask, HEAD_DIM, BLOCK_D, QUANT, GROUP, FMAX)


def write_kv_quant_triton(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          slot_mapping: torch.Tensor, quant: FusedQuant) -> None:
    """Quantize ``k``, ``v`` ([T, kv_heads, D]) inside the kernel and store codes (and per-token
    scales / zeros) at ``slot_mapping`` of one layer's quantized caches (uint8 ``[num_blocks,
    block_size, kv_heads, D or D/2]``). fp8 reads its per-head scales; int8 and int4 write theirs.
    The torch reference is the scheme's :meth:`~kvlab.kernels.quant.base.TokenwiseScheme.write`.
    int4 needs a power-of-two head_dim and group. Mutates the caches."""
    dev = k.device
    check_tensor("k", k, 3, dev)
    check_tensor("v", v, 3, dev)
    check_tensor("slot_mapping", slot_mapping, 1, dev, (torch.int32, torch.int64))
    T, kvh, D = k.shape
    check(v.shape == k.shape, f"v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    if quant.mode == 4:
        check(D & (D - 1) == 0 and quant.group & (quant.group - 1) == 0 and quant.group >= 2,
              f"the fused int4 write needs a power-of-two head_dim and group, got {D} and {quant.group}")
    if T == 0:
        return
    fmax = {1: 448.0, 2: 57344.0}.get(quant.mode, 0.0)
    _write_kv_quant_kernel[(T,)](
        k, v, k_cache, v_cache, slot_mapping, *quant.args(), *k.stride(), *v.stride(), *k_cache.stride(),
        *v_cache.stride(), KV_HEADS=kvh, HEAD_DIM=D, BLOCK_SIZE=k_cache.shape[1], BLOCK_H=next_pow2(kvh),
        BLOCK_D=next_pow2(D), QUANT=quant.mode, GROUP=quant.group, FMAX=fmax, num_warps=4)
