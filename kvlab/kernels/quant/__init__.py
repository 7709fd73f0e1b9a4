"""Quantized KV formats as plug-ins of the KV cache: one file per scheme plus this small registry.

A scheme (a :class:`~kvlab.kernels.quant.base.QuantScheme` subclass) decides, for a
:class:`~kvlab.kernels.kv_cache.KVSpec` whose ``quant`` names it, the stored dtype and packed
width of the data tensor and the per-block metadata (scales, zero points), and it quantizes on
write and dequantizes on read for the torch reference backend. The Triton kernels fuse the same
arithmetic (:mod:`kvlab.kernels.quant.triton_dequant`). Adding a scheme = one file that
subclasses ``QuantScheme`` and calls :func:`register_scheme`, plus its name in
:mod:`kvlab.kv_quant_format` (the torch-free byte facts both executors size the pool from).

Public API:
    ``make_spec(num_layers, num_kv_heads, head_dim, block_size, dtype, quant)`` -> a KVSpec whose
    ``bytes_per_block`` equals ``KVQuantConfig.bytes_per_block``; ``KVCache(spec, ...)`` then
    builds the scheme (``cache.scheme``). ``scheme_names()``, ``get_scheme_class(name)``.
"""

from __future__ import annotations

from typing import Any

import torch

from kvlab.kernels.kv_cache import KVSpec
from kvlab.kernels.quant.base import QuantScheme
from kvlab.kv_quant_format import KVQuantConfig

_SCHEMES: dict[str, type[QuantScheme]] = {}


def register_scheme(cls: type[QuantScheme]) -> type[QuantScheme]:
    """Class decorator: register ``cls`` under each name in ``cls.names``."""
    for name in cls.names:
        _SCHEMES[name] = cls
    return cls


def scheme_names() -> list[str]:
    """Registered quantized schemes (``none`` is the absence of one)."""
    return ["none", *_SCHEMES]


def get_scheme_class(name: str) -> type[QuantScheme]:
    if name not in _SCHEMES:
        raise ValueError(f"kv_quant={name!r} has no KV-cache implementation; choose one of: "
                         f"{', '.join(scheme_names())}")
    return _SCHEMES[name]


def make_spec(num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype,
              quant: Any = None) -> KVSpec:
    """The KVSpec of a cache in format ``quant`` (a KVQuantConfig, a scheme name, a mapping or None)."""
    q = KVQuantConfig.parse(quant)
    if q.name == "none":
        return KVSpec(num_layers, num_kv_heads, head_dim, block_size, dtype)
    cls = get_scheme_class(q.name)
    data_dtype, data_dim, metadata = cls.layout(q, num_kv_heads, head_dim, block_size)
    return KVSpec(num_layers, num_kv_heads, head_dim, block_size, dtype, tuple(metadata), data_dtype, data_dim, q,
                  cls)


def build_scheme(spec: KVSpec) -> QuantScheme:
    """The scheme object for a cache of ``spec`` (``spec.quant`` must name a registered scheme)."""
    return get_scheme_class(spec.quant.name)(spec)


# the built-in schemes register themselves on import
from kvlab.kernels.quant import fp8, int4, int8, kivi2  # noqa: E402,F401

__all__ = ["QuantScheme", "build_scheme", "get_scheme_class", "make_spec", "register_scheme", "scheme_names"]
