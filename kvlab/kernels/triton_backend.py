"""The Triton attention backend (``executor.attention_backend=triton``; ``auto`` picks it on CUDA).

Imported only when selected (:mod:`kvlab.kernels.backend`): the kernel modules import ``triton``
at top level. On a CPU it runs only under ``TRITON_INTERPRET=1`` (tests, tiny shapes).

Per step, ONE metadata build makes every int32 tensor the kernels read: the flat batch is ordered
decodes first, then multi-token chunks (prefill, later chunks, prefix hits, recompute):

* decodes: ``decode_block_tables`` [D, max_blocks] and ``decode_seq_lens`` [D] (context incl. the
  new token) -> :func:`kvlab.kernels.decode_attention.decode_attention` (GQA and split-K inside);
* chunks: ``prefill_block_tables`` [S, max_blocks], ``query_start_loc`` [S+1] (offsets into the
  chunk part of the flat batch) and ``prefill_seq_lens`` [S] ->
  :func:`kvlab.kernels.prefill_attention.prefill_attention` (all chunks in one launch);
* ``slot_mapping`` [tokens] for :func:`kvlab.kernels.write_kv_triton.write_kv_triton`.

Block tables are padded with block 0; the kernels never read past ``seq_lens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kvlab.kernels.backend import SeqSpan
from kvlab.kernels.copy_blocks_triton import copy_blocks_triton
from kvlab.kernels.decode_attention import decode_attention
from kvlab.kernels.kv_cache import LayerKV
from kvlab.kernels.metadata import decodes_first, slots_for
from kvlab.kernels.prefill_attention import prefill_attention
from kvlab.kernels.quant.fused import dequantized_step_cache, fused_args
from kvlab.kernels.write_kv_triton import write_kv_quant_triton, write_kv_triton


@dataclass
class TritonMetadata:
    """One step's kernel inputs (all on the device; int32 except ``slot_mapping`` int64)."""

    order: list[int]
    slot_mapping: torch.Tensor
    num_decodes: int
    decode_block_tables: torch.Tensor | None
    decode_seq_lens: torch.Tensor | None
    prefill_block_tables: torch.Tensor | None
    query_start_loc: torch.Tensor | None
    prefill_seq_lens: torch.Tensor | None
    spans: list | None = None  # (start_pos, num_tokens, block_table) in flat order (kivi2's residual plan)
    max_decode_seq_len: int = 0  # host-known bounds: size the grids without a device sync per layer
    max_query_len: int = 0


def _padded_tables(spans: Sequence[SeqSpan], block_size: int) -> list[list[int]]:
    """Each span's table cut to the blocks its context needs, padded with 0 to the longest."""
    need = [(start + n + block_size - 1) // block_size for start, n, _ in spans]
    width = max(need)
    return [list(t[:k]) + [0] * (width - k) for (_, _, t), k in zip(spans, need)]


class TritonBackend:
    """Implements :class:`kvlab.kernels.backend.AttentionBackend` with Triton kernels. Stateless."""

    name = "triton"
    copy_blocks = staticmethod(copy_blocks_triton)  # used by the KV cache for copy-on-write

    def build_metadata(self, seqs: Sequence[SeqSpan], block_size: int, device: torch.device) -> TritonMetadata:
        """Raises ``ValueError`` if a block table is too short for the positions it must hold."""
        order, nd = decodes_first(seqs)
        spans = [seqs[i] for i in order]
        slots: list[int] = []
        for start, n, table in spans:
            if (start + n + block_size - 1) // block_size > len(table):
                raise ValueError(f"block table of {len(table)} blocks cannot hold {start + n} tokens "
                                 f"(B={block_size})")
            slots.extend(slots_for(table, start, n, block_size))

        def i32(x: list) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.int32, device=device)

        dec, pre = spans[:nd], spans[nd:]
        qsl = [0]
        for _, n, _ in pre:
            qsl.append(qsl[-1] + n)
        return TritonMetadata(
            order=order,
            spans=spans,
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
            num_decodes=nd,
            decode_block_tables=i32(_padded_tables(dec, block_size)) if dec else None,
            decode_seq_lens=i32([s + n for s, n, _ in dec]) if dec else None,
            prefill_block_tables=i32(_padded_tables(pre, block_size)) if pre else None,
            query_start_loc=i32(qsl) if pre else None,
            prefill_seq_lens=i32([s + n for s, n, _ in pre]) if pre else None,
            max_decode_seq_len=max((s + n for s, n, _ in dec), default=0),
            max_query_len=max((n for _, n, _ in pre), default=0),
        )

    def write_kv(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, meta: TritonMetadata) -> None:
        """Scatter the new K/V into the layer's cache at ``meta.slot_mapping``, quantized inside the
        kernel for fp8 / int8 / int4 (power-of-two head_dim); kivi2 (and int4 otherwise) use the
        scheme's torch write. Mutates the cache."""
        if layer.scheme is None:
            write_kv_triton(k, v, layer.k, layer.v, meta.slot_mapping)
            return
        quant = fused_args(layer)
        d = k.shape[-1]
        if quant is not None and (quant.mode != 4 or (d & (d - 1) == 0 and quant.group & (quant.group - 1) == 0)):
            if hasattr(layer.scheme, "maybe_calibrate"):  # fp8 scale: calibrated (first write of a layer)
                layer.scheme.maybe_calibrate(layer.index, k, v)
            write_kv_quant_triton(k, v, layer.k, layer.v, meta.slot_mapping, quant)
        else:
            layer.scheme.write(layer, k, v, meta.slot_mapping, meta)

    def forward(self, layer: LayerKV, q: torch.Tensor, meta: TritonMetadata, scale: float) -> torch.Tensor:
        """Paged attention; fp8 / int8 / int4 caches are dequantized inside the kernels; a format
        without a fused path (kivi2) has the step's blocks dequantized first. Pure."""
        out = torch.empty_like(q)
        nd = meta.num_decodes
        k_cache, v_cache = layer.k, layer.v
        dec_bt, pre_bt = meta.decode_block_tables, meta.prefill_block_tables
        quant = fused_args(layer)
        if layer.scheme is not None and quant is None:
            tables = [t for t in (dec_bt, pre_bt) if t is not None]
            k_cache, v_cache, new = dequantized_step_cache(layer, tables)
            it = iter(new)
            dec_bt = next(it) if dec_bt is not None else None
            pre_bt = next(it) if pre_bt is not None else None
        if nd:
            decode_attention(q[:nd], k_cache, v_cache, dec_bt, meta.decode_seq_lens, scale,
                             out=out[:nd], max_seq_len=meta.max_decode_seq_len, quant=quant)
        if meta.prefill_seq_lens is not None:
            prefill_attention(q[nd:], k_cache, v_cache, pre_bt, meta.query_start_loc,
                              meta.prefill_seq_lens, scale, out=out[nd:], max_query_len=meta.max_query_len,
                              quant=quant)
        return out
