"""Paged decode attention in Triton (one new token per sequence), with split-K (Flash-Decoding).

Grid ``(num_seqs, num_kv_heads, num_splits)``. One program owns one sequence, one KV head and one
slice of the context: it loads the ``G = heads // kv_heads`` query rows of that KV head once (GQA:
they share every K/V tile it loads, padded to >= 16 rows for ``tl.dot``), then walks its context
slice in tiles of ``BLOCK_N`` token positions. Each position ``p`` is gathered through the block
table (``block = table[p // block_size]``, row ``p % block_size``), so any block size works and
tiles need not align with blocks. Online softmax in fp32 (base 2). With one split the program
writes the normalised output; with several it writes its partial output and log-sum-exp, and a
reduce kernel (grid ``(num_seqs, heads)``) merges the splits. Every load is masked by the
sequence length, the table load included, so padding entries of a block table are never read.
The caches may be strided views (one layer of a bigger tensor): strides are kernel arguments.

:func:`decode_attention_ref` is the plain torch reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kvlab.kernels.paged_tile import attend_tile, load_kv_tile_q
from kvlab.kernels.quant.fused import FusedQuant
from kvlab.kernels.triton_utils import check, check_quant_caches, check_tensor, dot_mode, next_pow2, num_sms

LOG2E = 1.4426950408889634
MIN_TOKENS_PER_SPLIT = 256
MAX_SPLITS = 64
PROGRAMS_PER_SM = 4  # no K/V reuse across programs: occupancy hides load latency (first guess, untuned)


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, part_ptr, lse_ptr,
    ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg,
    qk_scale, split_len,
    s_qn, s_qh, s_qd,
    s_kb, s_ks, s_kh, s_kd,
    s_vb, s_vs, s_vh, s_vd,
    s_btn, s_btb,
    s_on, s_oh, s_od,
    s_pn, s_ph, s_ps, s_pd,
    s_ln, s_lh, s_ls,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, DOT_F32: tl.constexpr, DOT_PREC: tl.constexpr,
    QUANT: tl.constexpr = 0, GROUP: tl.constexpr = 1,
):
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(lens_ptr + seq)
    lo = split * split_len
    hi = tl.minimum(lo + split_len, seq_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    g_mask = offs_g < G
    d_mask = offs_d < HEAD_DIM
    heads = kvh * G + offs_g
    q = tl.load(q_ptr + seq * s_qn + heads[:, None] * s_qh + offs_d[None, :] * s_qd,
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    bt_row = bt_ptr + seq * s_btn
    for start in range(lo, hi, BLOCK_N):
        pos = start + offs_n
        n_mask = pos < hi
        k, v = load_kv_tile_q(bt_row, s_btb, k_ptr, v_ptr, s_kb, s_ks, s_kh, s_kd, s_vb, s_vs, s_vh, s_vd,
                              ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg,
                              kvh, pos, n_mask, offs_d, d_mask, BLOCK_SIZE, QUANT, GROUP, HEAD_DIM)
        m_i, l_i, acc = attend_tile(q, k, v, n_mask[None, :], qk_scale, m_i, l_i, acc, DOT_F32, DOT_PREC)

    safe_l = tl.where(l_i > 0, l_i, 1.0)
    o = acc / safe_l[:, None]
    o_mask = g_mask[:, None] & d_mask[None, :]
    if SPLIT:
        tl.store(part_ptr + seq * s_pn + heads[:, None] * s_ph + split * s_ps + offs_d[None, :] * s_pd,
                 o, mask=o_mask)
        lse = tl.where(l_i > 0, m_i + tl.log2(safe_l), float("-inf"))  # base-2 log-sum-exp
        tl.store(lse_ptr + seq * s_ln + heads * s_lh + split * s_ls, lse, mask=g_mask)
    else:
        tl.store(out_ptr + seq * s_on + heads[:, None] * s_oh + offs_d[None, :] * s_od,
                 o.to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _reduce_kernel(
    part_ptr, lse_ptr, out_ptr, num_splits,
    s_pn, s_ph, s_ps, s_pd,
    s_ln, s_lh, s_ls,
    s_on, s_oh, s_od,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(lse_ptr + seq * s_ln + head * s_lh + offs_s * s_ls, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # every split empty: weights 0, output 0
    w = tl.exp2(lse - m)
    part = tl.load(part_ptr + seq * s_pn + head * s_ph + offs_s[:, None] * s_ps + offs_d[None, :] * s_pd,
                   mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    total = tl.sum(w, 0)
    o = tl.sum(part * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * s_on + head * s_oh + offs_d * s_od, o.to(out_ptr.dtype.element_ty), mask=d_mask)


def choose_num_splits(max_seq_len: int, num_seqs: int, num_kv_heads: int, num_sms: int) -> int:
    """Split-K factor: enough programs for about four per SM, each split >= 256 tokens, <= 64 splits.

    ``num_seqs * num_kv_heads`` programs without splitting; if they already fill the device
    (or ``num_sms`` is 0, i.e. no GPU) the answer is 1.
    """
    base = max(1, num_seqs * num_kv_heads)
    target = PROGRAMS_PER_SM * num_sms
    if base >= target:
        return 1
    by_occupancy = math.ceil(target / base)
    by_length = max_seq_len // MIN_TOKENS_PER_SPLIT
    return max(1, min(by_occupancy, by_length, MAX_SPLITS))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                     seq_lens: torch.Tensor, scale: float, *, num_splits: int | None = None,
                     out: torch.Tensor | None = None, max_seq_len: int | None = None,
                     block_n: int | None = None, num_warps: int = 4, num_stages: int = 2,
                     quant: FusedQuant | None = None) -> torch.Tensor:
    """Attention of one new token per sequence over its paged context. Pure except for ``out``.

    Args:
        q: [N, H, D] queries (fp32/fp16/bf16).
        k_cache, v_cache: [num_blocks, block_size, kv_heads, D] of one layer; strided views allowed.
            Any block size >= 1 (the kernel gathers per position).
        block_tables: int32 [N, max_blocks]; entries past a sequence's blocks are never read.
        seq_lens: int32 [N] context length including the current token (>= 1; its K/V written).
        scale: softmax scale (usually ``D ** -0.5``).
        num_splits: split-K factor; None picks :func:`choose_num_splits`; 1 = no reduce kernel.
        out: optional [N, H, D] output tensor (written in place and returned).
        max_seq_len: a host-side upper bound on ``seq_lens`` (sizes the splits without a device
            sync); default ``max_blocks * block_size``. Must not be below any ``seq_lens``.
        block_n: positions per tile (power of two >= 16); default 64 (32 for fp32 dots or a
            quantized cache on a GPU, 128 under the interpreter).
        quant: a quantized cache's scales (:func:`kvlab.kernels.quant.fused.fused_args`): the caches
            then hold codes (uint8; int4 packs two per byte) and are dequantized inside the kernel.
    Returns:
        [N, H, D] in ``q.dtype``.
    """
    check_quant_caches(q, k_cache, v_cache, quant)
    dev = q.device
    check_tensor("block_tables", block_tables, 2, dev, (torch.int32,))
    check_tensor("seq_lens", seq_lens, 1, dev, (torch.int32,))
    N, H, D = q.shape
    _, block_size, kvh, _ = k_cache.shape
    check(block_tables.shape[0] == N and seq_lens.shape[0] == N,
          f"block_tables {tuple(block_tables.shape)} and seq_lens {tuple(seq_lens.shape)} must have N={N} rows")
    bound = block_tables.shape[1] * block_size if max_seq_len is None else int(max_seq_len)
    if out is None:
        out = torch.empty_like(q)
    check(out.shape == q.shape and out.dtype == q.dtype and out.device == dev,
          f"out must be {tuple(q.shape)} {q.dtype} on {dev}, got {tuple(out.shape)} {out.dtype} on {out.device}")
    if N == 0 or bound == 0:
        return out
    if num_splits is None:
        num_splits = choose_num_splits(bound, N, kvh, num_sms(dev))
    check(isinstance(num_splits, int) and num_splits >= 1, f"num_splits must be an int >= 1, got {num_splits!r}")
    dot_f32, dot_prec = dot_mode(q.dtype, k_cache.dtype if quant is None else q.dtype)
    if block_n is None:  # fewer, bigger tiles in the interpreter; fp32 dots on a GPU need smaller ones
        block_n = 128 if dev.type != "cuda" else (32 if dot_f32 or quant is not None else 64)
    check(block_n >= 16 and block_n & (block_n - 1) == 0, f"block_n must be a power of two >= 16, got {block_n}")
    split_len = triton.cdiv(triton.cdiv(bound, num_splits), block_n) * block_n
    num_splits = triton.cdiv(bound, split_len)  # drop splits that would always be empty
    G = H // kvh
    common = dict(G=G, HEAD_DIM=D, BLOCK_SIZE=block_size, BLOCK_G=max(16, next_pow2(G)),
                  BLOCK_D=max(16, next_pow2(D)), BLOCK_N=block_n, DOT_F32=dot_f32, DOT_PREC=dot_prec,
                  QUANT=quant.mode if quant else 0, GROUP=quant.group if quant else 1,
                  num_warps=num_warps, num_stages=num_stages)
    qargs = quant.args() if quant else (k_cache, v_cache, k_cache, v_cache, 0, 0, 0, 0)
    qk_scale = float(scale) * LOG2E
    if num_splits == 1:
        _decode_kernel[(N, kvh, 1)](
            q, k_cache, v_cache, block_tables, seq_lens, out, out, out, *qargs, qk_scale, split_len,
            *q.stride(), *k_cache.stride(), *v_cache.stride(), *block_tables.stride(), *out.stride(),
            0, 0, 0, 0, 0, 0, 0, SPLIT=False, **common)
        return out
    part = torch.empty((N, H, num_splits, D), dtype=torch.float32, device=dev)
    lse = torch.empty((N, H, num_splits), dtype=torch.float32, device=dev)
    _decode_kernel[(N, kvh, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, part, lse, *qargs, qk_scale, split_len,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *block_tables.stride(), *out.stride(),
        *part.stride(), *lse.stride(), SPLIT=True, **common)
    _reduce_kernel[(N, H)](
        part, lse, out, num_splits, *part.stride(), *lse.stride(), *out.stride(),
        HEAD_DIM=D, BLOCK_D=common["BLOCK_D"], BLOCK_S=max(2, next_pow2(num_splits)), num_warps=4)
    return out


def decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                         seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain torch reference of :func:`decode_attention` (fp32 math, one sequence at a time)."""
    N, H, D = q.shape
    block_size, kvh = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for i in range(N):
        n = int(seq_lens[i])
        blocks = block_tables[i, : triton.cdiv(n, block_size)].long()
        k = k_cache[blocks].reshape(-1, kvh, D)[:n].float()  # [n, kvh, D]
        v = v_cache[blocks].reshape(-1, kvh, D)[:n].float()
        k = k.repeat_interleave(H // kvh, dim=1)
        v = v.repeat_interleave(H // kvh, dim=1)
        s = torch.einsum("hd,nhd->hn", q[i].float(), k) * scale
        out[i] = torch.einsum("hn,nhd->hd", s.softmax(-1), v).to(q.dtype)
    return out
