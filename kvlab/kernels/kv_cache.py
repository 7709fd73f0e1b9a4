"""The KV cache: the one owner of the cache tensors, their layout and dtype, and the block operations.

Layout (stated here and nowhere else): one data tensor per pool,

    ``[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]``  (index 0 of dim 1 is K, 1 is V)

Why this order: the block dimension sits behind (layer, K/V), so ``data[:, :, blocks]`` names
every byte of a set of blocks in every layer and a copy-on-write copy or a swap is ONE indexed
copy; ``data[l, 0]`` and ``data[l, 1]`` are contiguous ``[num_blocks, block_size, kv_heads,
head_dim]`` per-layer views, the shape every attention kernel reads through a block table; and
a block's ``block_size x kv_heads x head_dim`` slots are contiguous, so a kernel loads a whole
block of one KV head with unit-stride rows.

Per-block metadata (scales, zero points: the quantized KV formats) is declared with
:class:`BlockMetadata` and stored as extra tensors ``[num_layers, 2, num_blocks, *shape]`` (or
``[num_layers, num_blocks, *shape]`` for metadata of one half only) with the same block axis, so
every block operation moves a block's metadata together with its data.

A quantized KV format (``KVSpec.quant``, :mod:`kvlab.kernels.quant`) chooses the data tensor's
dtype and last dimension (packed codes), declares its metadata, and may hold state outside the
blocks (fp8's per-head scale table, kivi2's full-precision residual pool); the scheme object is
``KVCache.scheme`` and every :class:`LayerKV` carries it, with the layer index, to the backends.

A pool lives on the device (the blocks the allocator hands out) and, when swap space is asked
for, a second pool on the CPU (pinned when the device is CUDA) holds swapped-out blocks. The
allocator never sees any of this: it counts block ids; this class turns ids into bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from kvlab.kv_format import kv_bytes_per_block, kv_bytes_per_token

# copy_fn(cache [P, num_blocks, ...], src int64 [N], dst int64 [N]): copy block src[i] -> dst[i] (mutates)
CopyFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class BlockMetadata:
    """A per-block tensor stored beside the KV data: ``shape`` per (layer, K|V, block), ``dtype``.

    Example (for the quantization issue): one fp32 scale per token per KV head is
    ``BlockMetadata("scale", (block_size, kv_heads), torch.float32)``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    halves: int = 2  # 2: one per K and V ([L, 2, NB, *shape]); 1: one per block ([L, NB, *shape])

    def tensor_shape(self, num_layers: int, num_blocks: int) -> tuple[int, ...]:
        lead = (num_layers, 2) if self.halves == 2 else (num_layers,)
        return (*lead, num_blocks, *self.shape)


@dataclass(frozen=True)
class KVSpec:
    """What a KV cache is made of, before any memory is allocated. Immutable."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype
    metadata: tuple[BlockMetadata, ...] = field(default=())
    data_dtype: torch.dtype | None = None  # stored element type (None = ``dtype``; quantized: uint8)
    data_dim: int | None = None  # stored elements per head and token (None = ``head_dim``; packed: less)
    quant: Any = None  # a kvlab.kv_quant_format.KVQuantConfig, or None = unquantized
    scheme_cls: Any = None  # the kvlab.kernels.quant scheme class KVCache instantiates (None = unquantized)

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.data_dtype or self.dtype

    @property
    def stored_dim(self) -> int:
        return self.data_dim or self.head_dim

    @property
    def scheme_name(self) -> str:
        return "none" if self.quant is None else self.quant.name

    @property
    def bytes_per_token(self) -> int:
        """Data bytes of one token slot, all layers (:func:`kvlab.kv_format.kv_bytes_per_token`)."""
        return kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.stored_dim,
                                  self.storage_dtype.itemsize)

    @property
    def bytes_per_block(self) -> int:
        """Bytes one block costs in the pool: data plus every metadata tensor's share, plus a
        quantized format's residual share (kivi2); equals
        :meth:`kvlab.kv_quant_format.KVQuantConfig.bytes_per_block` for a quantized spec."""
        meta = sum(self.num_layers * m.halves * math.prod(m.shape) * m.dtype.itemsize for m in self.metadata)
        extra = 0
        if self.quant is not None and self.quant.name == "kivi2":
            per_half = math.ceil(self.quant.residual_pool_fraction * self.block_size * self.num_kv_heads
                                 * self.head_dim * self.dtype.itemsize)
            extra = self.num_layers * 2 * per_half
        return kv_bytes_per_block(self.block_size, self.bytes_per_token, meta + extra)

    def data_shape(self, num_blocks: int) -> tuple[int, ...]:
        return (self.num_layers, 2, num_blocks, self.block_size, self.num_kv_heads, self.stored_dim)


class LayerKV(NamedTuple):
    """One layer's views into the cache (no copies): ``k``, ``v`` are ``[num_blocks, block_size,
    kv_heads, stored_dim]``; ``metadata[name]`` is ``(k_part, v_part)``, each ``[num_blocks, *shape]``
    (both the same tensor for one-half metadata). ``index`` is the layer number and ``scheme`` the
    cache's quantized format (:mod:`kvlab.kernels.quant`), None when unquantized."""

    k: torch.Tensor
    v: torch.Tensor
    metadata: dict[str, tuple[torch.Tensor, torch.Tensor]]
    index: int = 0
    scheme: Any = None


def torch_copy_blocks(cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """Reference block copy on ``cache`` [P, num_blocks, ...]: one gather + one scatter. Mutates it."""
    cache[:, dst] = cache[:, src]


class KVCache:
    """Device KV pool (+ optional CPU swap pool) for one model.

    Attributes: ``spec``, ``device``, ``num_blocks``, ``num_cpu_blocks``, ``data`` (device tensor in
    the module's layout), ``cpu_data`` (CPU pool or None), ``metadata`` / ``cpu_metadata`` (name ->
    tensor), ``layers`` (per-layer :class:`LayerKV` views, built once).

    Every method that moves blocks mutates the destination pool; nothing else mutates.
    """

    def __init__(self, spec: KVSpec, num_blocks: int, num_cpu_blocks: int = 0,
                 device: torch.device | str = "cpu", copy_fn: CopyFn | None = None) -> None:
        if num_blocks < 1:
            raise ValueError(f"a KV cache needs at least one block, got num_blocks={num_blocks}")
        self.spec = spec
        self.device = torch.device(device)
        self.num_blocks = num_blocks
        self.num_cpu_blocks = num_cpu_blocks
        self.copy_fn: CopyFn = copy_fn or torch_copy_blocks
        L = spec.num_layers
        # Zeros, not empty: padded slots are masked, but NaN garbage would survive 0 * NaN.
        self.data = torch.zeros(spec.data_shape(num_blocks), dtype=spec.storage_dtype, device=self.device)
        self.metadata = {m.name: torch.zeros(m.tensor_shape(L, num_blocks), dtype=m.dtype, device=self.device)
                         for m in spec.metadata}
        self._halves = {m.name: m.halves for m in spec.metadata}
        self.cpu_data: torch.Tensor | None = None
        self.cpu_metadata: dict[str, torch.Tensor] = {}
        if num_cpu_blocks > 0:
            pin = self.device.type == "cuda"
            self.cpu_data = torch.zeros(spec.data_shape(num_cpu_blocks), dtype=spec.storage_dtype, pin_memory=pin)
            self.cpu_metadata = {m.name: torch.zeros(m.tensor_shape(L, num_cpu_blocks), dtype=m.dtype,
                                                     pin_memory=pin) for m in spec.metadata}
        self.scheme: Any = None
        if spec.scheme_cls is not None:  # set by kvlab.kernels.quant.make_spec (no import from here: no cycle)
            self.scheme = spec.scheme_cls(spec)
            self.scheme.attach(self)

        def parts(t: torch.Tensor, name: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return (t[i, 0], t[i, 1]) if self._halves[name] == 2 else (t[i], t[i])

        self.layers = [
            LayerKV(self.data[i, 0], self.data[i, 1], {n: parts(t, n, i) for n, t in self.metadata.items()},
                    i, self.scheme)
            for i in range(L)
        ]

    # -- facts --------------------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self.spec.block_size

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.dtype

    @property
    def bytes_per_block(self) -> int:
        return self.spec.bytes_per_block

    @property
    def nbytes(self) -> int:
        """Device bytes held (data + metadata + a quantized format's state outside the blocks)."""
        extra = self.scheme.state_nbytes() if self.scheme is not None else 0
        return self.data.nbytes + sum(t.nbytes for t in self.metadata.values()) + extra

    def _tensors(self, cpu: bool) -> list[torch.Tensor]:
        """Every block-indexed tensor of a pool as a ``[P, num_blocks, ...]`` view (block axis 1)."""
        if cpu:
            assert self.cpu_data is not None
            data, meta = self.cpu_data, self.cpu_metadata
        else:
            data, meta = self.data, self.metadata
        out = [data.view(data.shape[0] * 2, *data.shape[2:])]
        for name, t in meta.items():
            out.append(t.view(t.shape[0] * 2, *t.shape[2:]) if self._halves[name] == 2 else t)
        return out

    # -- block operations ---------------------------------------------------------------------
    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy-on-write: device block ``src`` -> ``dst`` (data and metadata, every layer)."""
        if not pairs:
            return
        if self.scheme is not None:
            self.scheme.before_copy(pairs)
        src = torch.tensor([s for s, _ in pairs], dtype=torch.long, device=self.device)
        dst = torch.tensor([d for _, d in pairs], dtype=torch.long, device=self.device)
        for t in self._tensors(cpu=False):
            self.copy_fn(t, src, dst)

    def swap_out(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Device block ``src`` -> CPU block ``dst`` for each pair (blocks of preempted sequences)."""
        self._swap(pairs, to_cpu=True)

    def swap_in(self, pairs: Sequence[tuple[int, int]]) -> None:
        """CPU block ``src`` -> device block ``dst`` for each pair (resumed sequences)."""
        self._swap(pairs, to_cpu=False)

    def _swap(self, pairs: Sequence[tuple[int, int]], to_cpu: bool) -> None:
        if not pairs:
            return
        if self.cpu_data is None:
            raise RuntimeError("swap requested but the KV cache has no CPU blocks (kv.swap_space_gib = 0)")
        if self.scheme is not None:
            self.scheme.before_swap(pairs, to_cpu)
        cpu = torch.device("cpu")
        src_dev, dst_dev = (self.device, cpu) if to_cpu else (cpu, self.device)
        src = torch.tensor([s for s, _ in pairs], dtype=torch.long, device=src_dev)
        dst = torch.tensor([d for _, d in pairs], dtype=torch.long, device=dst_dev)
        pinned = self.device.type == "cuda"
        for s_t, d_t in zip(self._tensors(cpu=not to_cpu), self._tensors(cpu=to_cpu)):
            if not pinned:
                d_t[:, dst] = s_t[:, src]
            elif to_cpu:
                # gather on the device, one DMA into a pinned staging buffer, then scatter on the CPU
                moved = s_t.index_select(1, src)
                staging = torch.empty(moved.shape, dtype=moved.dtype, pin_memory=True)
                staging.copy_(moved, non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()
                d_t[:, dst] = staging
            else:
                # gather on the CPU straight into pinned memory, then one async DMA to the device
                staging = torch.empty((s_t.shape[0], len(pairs), *s_t.shape[2:]), dtype=s_t.dtype,
                                      pin_memory=True)
                torch.index_select(s_t, 1, src, out=staging)
                d_t[:, dst] = staging.to(self.device, non_blocking=True)
