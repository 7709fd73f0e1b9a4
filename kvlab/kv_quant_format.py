"""KV formats (``kv_quant=none|fp8_e4m3|fp8_e5m2|int8|int4|kivi2``): knobs, validation, exact bytes.

Torch-free on purpose: the simulator (:mod:`kvlab.executor.sim`) and the real cache
(:mod:`kvlab.kernels.quant`) size their pools from :meth:`KVQuantConfig.bytes_per_block`, so a
block costs the same bytes in a paper-scale simulation and on the real model.

Bytes per block, per layer and per K|V half, for ``B`` tokens, ``h`` KV heads, head_dim ``d``,
model dtype ``e`` bytes (metadata — scales, zero points — is fp32, 4 bytes):

=========  ======================================  ==============================================
scheme     data                                    metadata
=========  ======================================  ==============================================
none       ``B*h*d*e``                             —
fp8_*      ``B*h*d`` (1 byte per element)          one fp32 scale per (layer, K|V, head): a fixed
                                                   table of ``layers*2*h*4`` bytes, not per block
int8       ``B*h*d``                               ``B*h*4`` (scale per token per head)
int4       ``B*h*d/2`` (two values per byte)       ``B*h*(d/g)*8`` (scale + zero per group of g)
kivi2      ``B*h*d/4`` (four values per byte)      K: ``(B/gk)*h*d*8`` (scale + zero per channel
                                                   per token group of ``gk = min(g, B)``);
                                                   V: ``B*h*(d/g)*8`` (per token, channel groups)
=========  ======================================  ==============================================

kivi2 also keeps the most recent ``residual`` tokens of a sequence in full precision in a
residual pool of ``floor(num_blocks * residual_pool_fraction)`` full-precision blocks owned by
the cache (design: docs/kernels.md "Quantized KV formats"); each block is charged its share,
``ceil(residual_pool_fraction * B*h*d*e)`` per layer and K|V half, so the pool never exceeds what
the budget paid for and ``capacity = budget // bytes_per_block`` holds exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

SCHEMES = ("none", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "kivi2")
FP8_SCALE_CHOICES = ("fixed", "calibrated")
META_BYTES = 4  # scales and zero points are fp32
# the knobs each scheme accepts (besides ``name``); anything else is an error naming the key
KNOBS: dict[str, tuple[str, ...]] = {
    "none": (),
    "fp8_e4m3": ("scale",),
    "fp8_e5m2": ("scale",),
    "int8": (),
    "int4": ("group_size",),
    "kivi2": ("group_size", "residual", "residual_pool_fraction"),
}


@dataclass(frozen=True)
class KVQuantConfig:
    """The ``kv_quant`` group, validated. Immutable.

    Attributes:
        name: one of :data:`SCHEMES`.
        scale: fp8 only: ``fixed`` (every scale 1.0, vLLM's default) or ``calibrated`` (per-head
            scale = amax / fp8 max of the first write into each layer, then frozen).
        group_size: int4: channels per scale/zero group along head_dim; kivi2: tokens per key
            group (block-local: ``min(group_size, block_size)``) and channels per value group.
        residual: kivi2: most recent tokens per sequence kept in full precision.
        residual_pool_fraction: kivi2: full-precision residual blocks per pool block.
    """

    name: str = "none"
    scale: str = "fixed"
    group_size: int = 32
    residual: int = 128
    residual_pool_fraction: float = 0.25

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> KVQuantConfig:
        """Read ``cfg["kv_quant"]`` (a mapping with ``name``, a scheme name, or absent = ``none``).

        Raises ``ValueError`` naming the key and the choices for a bad scheme or knob.
        """
        raw = (cfg or {}).get("kv_quant")
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: Any) -> KVQuantConfig:
        """A scheme name, a ``kv_quant`` mapping, a :class:`KVQuantConfig` or None (= ``none``)."""
        if isinstance(raw, KVQuantConfig):
            return raw
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping):
            raise ValueError(f"kv_quant={raw!r}: must be a scheme name or a mapping; choose one of: "
                             f"{', '.join(SCHEMES)}")
        raw = dict(raw)
        name = raw.pop("name", "none")
        if name not in SCHEMES:
            raise ValueError(f"kv_quant={name!r} is unknown; choose one of: {', '.join(SCHEMES)}")
        allowed = KNOBS[name]
        for key in raw:
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise ValueError(f"kv_quant.{key} is not a knob of kv_quant={name}; its knobs: {known}")
        out = cls(name=name, **{k: v for k, v in raw.items() if v is not None})
        out._validate()
        return out

    def _validate(self) -> None:
        if self.scale not in FP8_SCALE_CHOICES:
            raise ValueError(f"kv_quant.scale={self.scale!r} is unknown; choose one of: "
                             f"{', '.join(FP8_SCALE_CHOICES)}")
        for key in ("group_size", "residual"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "group_size" else 0):
                raise ValueError(f"kv_quant.{key}={v!r}: must be an integer >= {1 if key == 'group_size' else 0}")
        f = self.residual_pool_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ValueError(f"kv_quant.residual_pool_fraction={f!r}: must be a number in [0, 1]")

    # -- facts ----------------------------------------------------------------------------
    @property
    def knobs(self) -> dict[str, Any]:
        """The scheme's own knobs and their values (e.g. for a results table)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in KNOBS[self.name]}

    def _group(self, extent: int, extent_name: str, why: str) -> int:
        """``group_size`` capped at ``extent``; it must divide ``extent`` (the error names both)."""
        g = min(self.group_size, extent)
        if extent % g:
            raise ValueError(f"kv_quant.group_size={self.group_size} must divide {extent_name}={extent} ({why})")
        return g

    def channel_group(self, head_dim: int) -> int:
        """Channels per scale group along head_dim (int4, kivi2 values). Must divide head_dim."""
        return self._group(head_dim, "head_dim", f"kv_quant={self.name}")

    def token_group(self, block_size: int) -> int:
        """kivi2 key groups: tokens per group, block-local (a group never spans two blocks)."""
        return self._group(block_size, "allocator.block_size", "kivi2 key groups live inside one block")

    def half_block_bytes(self, block_size: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
        """Bytes of one block of one layer's K or V half, data + metadata (not kivi2: see
        :meth:`bytes_per_block`)."""
        B, h, d = block_size, num_kv_heads, head_dim
        if self.name == "none":
            return B * h * d * dtype_bytes
        if self.name.startswith("fp8"):
            return B * h * d
        if self.name == "int8":
            return B * h * d + B * h * META_BYTES
        if self.name == "int4":
            g = self.channel_group(d)
            if d % 2:
                raise ValueError(f"kv_quant=int4 needs an even head_dim, got {d}")
            return B * h * d // 2 + B * h * (d // g) * 2 * META_BYTES
        raise ValueError("kivi2's K and V halves differ: use bytes_per_block")

    def bytes_per_block(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                        block_size: int, tensor_parallel: int = 1) -> int:
        """Exact bytes one block costs in the pool (all layers, K and V, this GPU's heads)."""
        if num_kv_heads % tensor_parallel:
            raise ValueError(f"tensor_parallel={tensor_parallel} must divide num_kv_heads={num_kv_heads}")
        h = num_kv_heads // tensor_parallel
        if self.name != "kivi2":
            return num_layers * 2 * self.half_block_bytes(block_size, h, head_dim, dtype_bytes)
        B, d = block_size, head_dim
        if d % 4:
            raise ValueError(f"kv_quant=kivi2 needs head_dim divisible by 4, got {d}")
        gk, gv = self.token_group(B), self.channel_group(d)
        data = 2 * B * h * d // 4
        meta = (B // gk) * h * d * 2 * META_BYTES + B * h * (d // gv) * 2 * META_BYTES
        resid = 2 * math.ceil(self.residual_pool_fraction * B * h * d * dtype_bytes)
        return num_layers * (data + meta + resid)

    def bytes_per_token(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                        block_size: int = 16, tensor_parallel: int = 1) -> float:
        """``bytes_per_block / block_size``: the exact average per token slot (a float: per-block
        metadata and the residual share need not divide evenly)."""
        return self.bytes_per_block(num_layers, num_kv_heads, head_dim, dtype_bytes, block_size,
                                    tensor_parallel) / block_size

    def fixed_bytes(self, num_layers: int, num_kv_heads: int, tensor_parallel: int = 1) -> int:
        """Bytes the cache holds independently of the block count (fp8's per-head scale table)."""
        if self.name.startswith("fp8"):
            return num_layers * 2 * (num_kv_heads // tensor_parallel) * META_BYTES
        return 0

    def residual_blocks(self, num_blocks: int) -> int:
        """kivi2: full-precision residual blocks for a pool of ``num_blocks`` (0 otherwise)."""
        if self.name != "kivi2":
            return 0
        return int(math.floor(num_blocks * self.residual_pool_fraction))

    def capacity_blocks(self, budget_bytes: int, num_layers: int, num_kv_heads: int, head_dim: int,
                        dtype_bytes: int, block_size: int, tensor_parallel: int = 1) -> int:
        """Blocks a KV budget holds: ``(budget - fixed) // bytes_per_block`` (0 if none fit)."""
        per = self.bytes_per_block(num_layers, num_kv_heads, head_dim, dtype_bytes, block_size, tensor_parallel)
        return max(0, (int(budget_bytes) - self.fixed_bytes(num_layers, num_kv_heads, tensor_parallel)) // per)

    @property
    def dequant_ops_per_element(self) -> int:
        """Arithmetic per element read to dequantize it (the simulator's dequant cost): 0 for
        ``none``; 1 multiply for fp8 / int8 (scale); 2 for int4 / kivi2 (scale and zero); the
        unpacking shifts and masks of packed formats count 1 more."""
        return {"none": 0, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1, "int4": 3, "kivi2": 3}[self.name]
