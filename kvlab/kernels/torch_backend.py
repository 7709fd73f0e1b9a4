"""The torch attention backend (``executor.attention_backend=torch``): the reference, and what CPUs run.

Per step it puts single-token decodes first in the flat batch (one batched, masked SDPA over
block-gathered context for all of them), then each multi-token chunk with its own causal mask
(:mod:`kvlab.kernels.metadata`, :mod:`kvlab.kernels.paged_attention`). Works on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kvlab.kernels.backend import SeqSpan
from kvlab.kernels.cache_ops import write_kv
from kvlab.kernels.kv_cache import LayerKV
from kvlab.kernels.metadata import AttentionMetadata, build_metadata, decodes_first
from kvlab.kernels.paged_attention import paged_attention


class TorchBackend:
    """Implements :class:`kvlab.kernels.backend.AttentionBackend` in plain PyTorch. Stateless."""

    name = "torch"

    def build_metadata(self, seqs: Sequence[SeqSpan], block_size: int, device: torch.device) -> AttentionMetadata:
        """Decodes-first metadata; ``meta.order`` maps flat order back to ``seqs``."""
        order, num_decodes = decodes_first(seqs)
        meta = build_metadata([seqs[i] for i in order], num_decodes, block_size, device)
        meta.order = order
        return meta

    def write_kv(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
        """Scatter the new K/V into the layer's cache at ``meta.slot_mapping`` (quantized on write when
        the cache has a KV format, :mod:`kvlab.kernels.quant`). Mutates the cache."""
        if layer.scheme is not None:
            layer.scheme.write(layer, k, v, meta.slot_mapping, meta)
        else:
            write_kv(k, v, layer.k, layer.v, meta.slot_mapping)

    def forward(self, layer: LayerKV, q: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        """Paged attention; a quantized cache is dequantized block-wise as it is gathered. Pure."""
        read = None
        if layer.scheme is not None:
            def read(blocks: torch.Tensor, half: int) -> torch.Tensor:
                return layer.scheme.read(layer, blocks, half)
        return paged_attention(q, layer.k, layer.v, meta, scale, read)
