"""The quantized-format protocol (:class:`QuantScheme`) and the token-wise base most schemes share.

A token-wise scheme quantizes each token's ``[kv_heads, head_dim]`` K (or V) independently, so a
write is a scatter of codes and per-token metadata at the tokens' slots, exactly like the
unquantized write, and a block's content never depends on another block: copy-on-write, fork,
swap and prefix sharing move data and metadata together and nothing else is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from kvlab.kernels.kv_cache import BlockMetadata, KVSpec, LayerKV


class QuantScheme:
    """One quantized KV format bound to one cache.

    Class facts: ``names`` (registry names), :meth:`layout` (stored dtype, packed width, metadata).
    Mutating calls: :meth:`write` (the layer's cache), :meth:`before_copy` / :meth:`before_swap`
    (scheme state outside the blocks). :meth:`read` is pure.
    """

    names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: KVSpec) -> None:
        self.spec = spec
        self.cfg = spec.quant
        self.name = spec.quant.name
        self.cache: Any = None

    @classmethod
    def layout(cls, cfg: Any, num_kv_heads: int, head_dim: int,
               block_size: int) -> tuple[torch.dtype, int, list[BlockMetadata]]:
        """(stored dtype, stored elements per head and token, per-block metadata)."""
        raise NotImplementedError

    def attach(self, cache: Any) -> None:
        """Called once by the cache after its tensors exist: allocate state outside the blocks."""
        self.cache = cache

    def state_nbytes(self) -> int:
        """Device bytes the scheme holds outside the block pool."""
        return 0

    def before_copy(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Before a copy-on-write of device blocks ``src -> dst``."""

    def before_swap(self, pairs: Sequence[tuple[int, int]], to_cpu: bool) -> None:
        """Before a swap (``to_cpu``: device ``src`` -> CPU ``dst``; else CPU -> device)."""

    def write(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
              meta: Any = None) -> None:
        raise NotImplementedError

    def read(self, layer: LayerKV, blocks: torch.Tensor, half: int) -> torch.Tensor:
        """Dequantized K (``half`` 0) or V (1) of ``blocks`` (long, any shape ``[..., n]``) as
        ``[..., n * block_size, kv_heads, head_dim]`` in the model dtype."""
        raise NotImplementedError


class TokenwiseScheme(QuantScheme):
    """Base of the schemes whose codes and metadata are per token (fp8, int8, int4)."""

    def quantize(self, x: torch.Tensor, layer: int, half: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` [T, kv_heads, head_dim] fp32 -> (codes [T, kv_heads, stored_dim] uint8, metadata
        name -> [T, *per-token shape])."""
        raise NotImplementedError

    def dequantize(self, codes: torch.Tensor, meta: dict[str, torch.Tensor], layer: int, half: int) -> torch.Tensor:
        """Inverse of :meth:`quantize` on any leading shape: codes [..., kv_heads, stored_dim] -> fp32."""
        raise NotImplementedError

    def write(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
              meta: Any = None) -> None:
        """Quantize the new K/V and scatter codes and metadata to ``slot_mapping``. Mutates the cache."""
        h, dd = layer.k.shape[2], layer.k.shape[3]
        for half, x, data in ((0, k, layer.k), (1, v, layer.v)):
            codes, m = self.quantize(x.float(), layer.index, half)
            data.view(-1, h, dd).index_copy_(0, slot_mapping, codes)
            for name, t in m.items():
                store = layer.metadata[name][half]
                store.view(-1, *store.shape[2:]).index_copy_(0, slot_mapping, t.to(store.dtype))

    def read(self, layer: LayerKV, blocks: torch.Tensor, half: int) -> torch.Tensor:
        flat = blocks.reshape(-1)
        data = layer.k if half == 0 else layer.v
        codes = data.index_select(0, flat)  # [nb, B, h, dd]
        meta = {n: parts[half].index_select(0, flat) for n, parts in layer.metadata.items()}
        x = self.dequantize(codes, meta, layer.index, half).to(self.spec.dtype)
        B, h, d = x.shape[1], x.shape[2], x.shape[3]
        return x.view(*blocks.shape[:-1], blocks.shape[-1] * B, h, d)
