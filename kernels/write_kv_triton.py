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
