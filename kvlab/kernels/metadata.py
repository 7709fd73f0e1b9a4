"""Attention metadata: one step's flat batch described for the attention backend.

The flat batch puts every decode token (sequences that compute exactly one new token) first, in
one batched group, then each multi-token chunk (prefill, chunked prefill, recompute). Everything
here is built once per step and reused by every layer: slot mapping, the padded block tables
and context-length mask of the decode group, and each chunk's block list and causal mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kvlab.request import is_decode


@dataclass
class ChunkMeta:
    """A multi-token chunk: tokens ``offset .. offset+num_tokens-1`` of the flat batch, whose
    first token sits at position ``start_pos``; ``blocks`` covers positions 0..context_len-1.
    ``mask`` is None when the chunk is the whole context (plain causal), else [num_tokens, ctx]
    bool (True = attend)."""

    offset: int
    num_tokens: int
    start_pos: int
    context_len: int
    blocks: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class AttentionMetadata:
    """Per-step attention inputs. ``slot_mapping[t]`` is the cache slot of flat token ``t``.

    Decode group (the first ``num_decodes`` flat tokens): ``decode_block_tables`` [D, max_blocks]
    (padded with block 0, masked out), ``decode_mask`` [D, 1, 1, max_blocks * block_size].
    """

    block_size: int
    slot_mapping: torch.Tensor
    num_decodes: int
    decode_block_tables: torch.Tensor | None
    decode_context_lens: torch.Tensor | None
    decode_mask: torch.Tensor | None
    chunks: list[ChunkMeta]
    order: list[int] = field(default_factory=list)  # flat order -> index in the backend's input
    spans: list = field(default_factory=list)  # (start_pos, num_tokens, block_table) in flat order


def decodes_first(seqs: Sequence[tuple[int, int, Sequence[int]]]) -> tuple[list[int], int]:
    """Flat-batch order putting single-token sequences first (stable), and how many there are."""
    decodes = [i for i, (_, n, _) in enumerate(seqs) if is_decode(n)]
    return decodes + [i for i, (_, n, _) in enumerate(seqs) if not is_decode(n)], len(decodes)


def slots_for(block_table: Sequence[int], start: int, n: int, block_size: int) -> list[int]:
    """Cache slots of positions start..start+n-1: block_table[p // B] * B + p % B."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, start + n)]


def build_metadata(seqs: Sequence[tuple[int, int, Sequence[int]]], num_decodes: int, block_size: int,
                   device: torch.device) -> AttentionMetadata:
    """Metadata for ``seqs`` = [(start_pos, num_tokens, block_table)] in flat-batch order.

    The first ``num_decodes`` entries must have ``num_tokens == 1``. Raises ``ValueError`` if a
    block table is too short for the positions it must hold.
    """
    B = block_size
    slots: list[int] = []
    for start, n, table in seqs:
        if (start + n + B - 1) // B > len(table):
            raise ValueError(f"block table of {len(table)} blocks cannot hold {start + n} tokens (B={B})")
        slots.extend(slots_for(table, start, n, B))
    dec_tables = dec_lens = dec_mask = None
    if num_decodes:
        lens = [start + 1 for start, _, _ in seqs[:num_decodes]]
        max_blocks = (max(lens) + B - 1) // B
        padded = [list(t[:max_blocks]) + [0] * (max_blocks - min(len(t), max_blocks))
                  for _, _, t in seqs[:num_decodes]]
        dec_tables = torch.tensor(padded, dtype=torch.long, device=device)
        dec_lens = torch.tensor(lens, dtype=torch.long, device=device)
        cols = torch.arange(max_blocks * B, device=device)
        dec_mask = (cols[None, :] < dec_lens[:, None])[:, None, None, :]
    chunks: list[ChunkMeta] = []
    offset = num_decodes
    for start, n, table in seqs[num_decodes:]:
        ctx = start + n
        nblk = (ctx + B - 1) // B
        mask = None
        if start > 0:
            rows = torch.arange(start, ctx, device=device)[:, None]
            mask = torch.arange(ctx, device=device)[None, :] <= rows
        blocks = torch.tensor(list(table[:nblk]), dtype=torch.long, device=device)
        chunks.append(ChunkMeta(offset, n, start, ctx, blocks, mask))
        offset += n
    return AttentionMetadata(
        spans=list(seqs),
        block_size=B,
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        num_decodes=num_decodes,
        decode_block_tables=dec_tables,
        decode_context_lens=dec_lens,
        decode_mask=dec_mask,
        chunks=chunks,
    )
