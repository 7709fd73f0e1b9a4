"""Prefill / chunked-prefill attention over a paged context in Triton (variable-length, packed).

Sequence ``i`` contributes ``n_i = qsl[i+1] - qsl[i]`` query tokens ``q[qsl[i]:qsl[i+1]]`` at
positions ``seq_lens[i] - n_i .. seq_lens[i] - 1``; they attend causally to themselves and fully to
the cached prefix (the K/V of every position, new tokens included, are already in the cache). That
one rule covers fresh prefills, later chunks, prefix-cache hits, recompute and decodes (``n_i = 1``).

Grid ``(cdiv(max_query_len * G, BLOCK_M), num_seqs, num_kv_heads)``. A program owns ``BLOCK_M``
rows of one sequence and one KV head, where row ``r`` is (token ``r // G``, query head
``kv_head * G + r % G``): the ``G`` query heads of a KV head share every K/V tile (GQA), and each
row carries its own causal limit. Keys are walked in tiles of ``BLOCK_N`` positions from 0 to the
tile's last query position, each gathered through the block table (any block size); online softmax
in fp32 (base 2). Loads are masked by the sequence length, so table padding is never read; stores
are masked by the row count. Programs past a sequence's rows do no work.

:func:`prefill_attention_ref` is the plain torch reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvlab.kernels.paged_tile import attend_tile, load_kv_tile_q
from kvlab.kernels.quant.fused import FusedQuant
from kvlab.kernels.triton_utils import check, check_quant_caches, check_tensor, dot_mode, next_pow2

LOG2E = 1.4426950408889634


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, qsl_ptr, lens_ptr, out_ptr,
    ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg, qk_scale,
    s_qt, s_qh, s_qd,
    s_kb, s_ks, s_kh, s_kd,
    s_vb, s_vs, s_vh, s_vd,
    s_btn, s_btb,
    s_ot, s_oh, s_od,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PREC: tl.constexpr, QUANT: tl.constexpr = 0, GROUP: tl.constexpr = 1,
):
    tile = tl.program_id(0)
    seq = tl.program_id(1)
    kvh = tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    n_new = tl.load(qsl_ptr + seq + 1) - q_start
    seq_len = tl.load(lens_ptr + seq)
    ctx0 = seq_len - n_new  # position of the first new token

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_new * G
    tok = rows // G
    heads = kvh * G + rows % G
    q_pos = ctx0 + tok
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q_mask = row_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + (q_start + tok)[:, None] * s_qt + heads[:, None] * s_qh + offs_d[None, :] * s_qd,
                mask=q_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    # keys 0 .. last visible position of this tile's rows (0 if the tile holds no rows)
    last_tok = (tl.minimum(tile * BLOCK_M + BLOCK_M, n_new * G) - 1) // G
    hi = tl.where(tile * BLOCK_M < n_new * G, ctx0 + last_tok + 1, 0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    bt_row = bt_ptr + seq * s_btn
    for start in range(0, hi, BLOCK_N):
        pos = start + offs_n
        n_mask = pos < hi
        k, v = load_kv_tile_q(bt_row, s_btb, k_ptr, v_ptr, s_kb, s_ks, s_kh, s_kd, s_vb, s_vs, s_vh, s_vd,
                              ks_ptr, vs_ptr, kz_ptr, vz_ptr, s_sb, s_ss, s_sh, s_sg,
                              kvh, pos, n_mask, offs_d, d_mask, BLOCK_SIZE, QUANT, GROUP, HEAD_DIM)
        visible = n_mask[None, :] & (pos[None, :] <= q_pos[:, None])
        m_i, l_i, acc = attend_tile(q, k, v, visible, qk_scale, m_i, l_i, acc, DOT_F32, DOT_PREC)

    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + (q_start + tok)[:, None] * s_ot + heads[:, None] * s_oh + offs_d[None, :] * s_od,
             o.to(out_ptr.dtype.element_ty), mask=q_mask)


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                      query_start_loc: torch.Tensor, seq_lens: torch.Tensor, scale: float, *,
                      out: torch.Tensor | None = None, max_query_len: int | None = None,
                      block_m: int | None = None, block_n: int | None = None, num_warps: int = 8,
                      num_stages: int = 2, quant: FusedQuant | None = None) -> torch.Tensor:
    """Causal attention of packed new tokens over their paged contexts. Pure except for ``out``.

    Args:
        q: [T, H, D] new tokens of all sequences, packed in sequence order.
        k_cache, v_cache: [num_blocks, block_size, kv_heads, D] of one layer (strided views allowed;
            any block size >= 1); the new tokens' K/V must already be written.
        block_tables: int32 [S, max_blocks]; entries past a sequence's blocks are never read.
        query_start_loc: int32 [S+1], ``q[qsl[i]:qsl[i+1]]`` are sequence i's tokens (qsl[0] = 0).
        seq_lens: int32 [S] context length including the new tokens (>= n_i).
        scale: softmax scale.
        out: optional [T, H, D] output (written in place and returned).
        max_query_len: host-known bound on any n_i (sizes the grid; default T, no device sync).
        block_m: query rows (token x head-in-group) per program; block_n: key positions per tile
            (defaults 64 x 64; 32 x 32 for fp32 dots on a GPU).
        quant: a quantized cache's scales (:func:`kvlab.kernels.quant.fused.fused_args`): codes are
            dequantized inside the kernel.
    Returns:
        [T, H, D] in ``q.dtype``.
    """
    check_quant_caches(q, k_cache, v_cache, quant)
    dev = q.device
    check_tensor("block_tables", block_tables, 2, dev, (torch.int32,))
    check_tensor("query_start_loc", query_start_loc, 1, dev, (torch.int32,))
    check_tensor("seq_lens", seq_lens, 1, dev, (torch.int32,))
    T, H, D = q.shape
    _, block_size, kvh, _ = k_cache.shape
    S = seq_lens.shape[0]
    check(block_tables.shape[0] == S, f"block_tables has {block_tables.shape[0]} rows, seq_lens has {S}")
    check(query_start_loc.shape[0] == S + 1,
          f"query_start_loc must have S+1={S + 1} entries, got {query_start_loc.shape[0]}")
    if out is None:
        out = torch.empty_like(q)
    check(out.shape == q.shape and out.dtype == q.dtype and out.device == dev,
          f"out must be {tuple(q.shape)} {q.dtype} on {dev}, got {tuple(out.shape)} {out.dtype} on {out.device}")
    max_q = T if max_query_len is None else int(max_query_len)
    if T == 0 or S == 0 or max_q == 0:
        return out
    G = H // kvh
    dot_f32, dot_prec = dot_mode(q.dtype, k_cache.dtype if quant is None else q.dtype)
    small = dot_f32 and dev.type == "cuda"  # fp32 tiles: 32 x 32 keeps 8 warps from spilling registers
    if block_m is None:
        block_m = 32 if small else 64
    if block_n is None:
        block_n = 32 if small else 64
    for name, val in (("block_m", block_m), ("block_n", block_n)):
        check(val >= 16 and val & (val - 1) == 0, f"{name} must be a power of two >= 16, got {val}")
    grid = (triton.cdiv(max_q * G, block_m), S, kvh)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
        *(quant.args() if quant else (k_cache, v_cache, k_cache, v_cache, 0, 0, 0, 0)), float(scale) * LOG2E,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *block_tables.stride(), *out.stride(),
        G=G, HEAD_DIM=D, BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_D=max(16, next_pow2(D)), BLOCK_N=block_n,
        DOT_F32=dot_f32, DOT_PREC=dot_prec, QUANT=quant.mode if quant else 0, GROUP=quant.group if quant else 1,
        num_warps=num_warps, num_stages=num_stages)
    return out


def prefill_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                          query_start_loc: torch.Tensor, seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain torch reference of :func:`prefill_attention` (fp32 math, one sequence at a time)."""
    T, H, D = q.shape
    block_size, kvh = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for i in range(seq_lens.shape[0]):
        a, b, L = int(query_start_loc[i]), int(query_start_loc[i + 1]), int(seq_lens[i])
        if b == a:
            continue
        blocks = block_tables[i, : triton.cdiv(L, block_size)].long()
        k = k_cache[blocks].reshape(-1, kvh, D)[:L].float().repeat_interleave(H // kvh, dim=1)
        v = v_cache[blocks].reshape(-1, kvh, D)[:L].float().repeat_interleave(H // kvh, dim=1)
        s = torch.einsum("thd,nhd->htn", q[a:b].float(), k) * scale
        q_pos = torch.arange(L - (b - a), L, device=q.device)
        s = s.masked_fill(torch.arange(L, device=q.device)[None, :] > q_pos[:, None], float("-inf"))
        out[a:b] = torch.einsum("htn,nhd->thd", s.softmax(-1), v).to(q.dtype)
    return out
