"""Helpers shared by the Triton kernel launchers: argument checks, interpreter detection, SM count.

Importing this module does not import Triton (``kvlab.kernels`` must import without it); the
kernel modules that do import Triton use these helpers in their launchers.
"""

from __future__ import annotations

import functools
import os

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_mode(q_dtype: torch.dtype, cache_dtype: torch.dtype) -> tuple[bool, str]:
    """(cast tiles to fp32 before ``tl.dot``, ``input_precision`` for those fp32 dots).

    fp16/bf16 data go to ``tl.dot`` as they are (fp32 accumulation): (False, unused). fp32 or mixed
    data are cast to fp32 and use 3xTF32 on a GPU (about fp32 accuracy on tensor cores; exact IEEE
    dots there are FMA loops that spill registers). Under the interpreter everything is cast (its
    bf16 dot returns garbage) and the dot is IEEE.
    """
    if interpreting():
        return True, "ieee"
    if cache_dtype == torch.float32 or q_dtype != cache_dtype:
        return True, "tf32x3"
    return False, "ieee"


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 0 for a CPU tensor (the interpreter)."""
    if device.type != "cuda":
        return 0
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def check(cond: bool, msg: str) -> None:
    """Raise ``ValueError(msg)`` unless ``cond`` (launcher argument checks; never stripped by -O)."""
    if not cond:
        raise ValueError(msg)


def check_tensor(name: str, t: torch.Tensor, ndim: int, device: torch.device,
                 dtypes: tuple[torch.dtype, ...] = SUPPORTED_DTYPES) -> None:
    """Check rank, device and dtype of argument ``name`` with a message naming it."""
    check(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check(t.dim() == ndim, f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    check(t.device == device, f"{name} is on {t.device}, expected {device} (all arguments on one device)")
    names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
    check(t.dtype in dtypes, f"{name} has dtype {t.dtype}; supported: {names}")


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def check_attention_caches(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Shared launcher checks: q [*, H, D] against one layer's [num_blocks, block_size, kv_heads, D] caches."""
    dev = q.device
    check_tensor("q", q, 3, dev)
    check_tensor("k_cache", k_cache, 4, dev)
    check_tensor("v_cache", v_cache, 4, dev)
    check(v_cache.shape[1:] == k_cache.shape[1:],
          f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    check(k_cache.dtype == v_cache.dtype, f"k_cache dtype {k_cache.dtype} != v_cache dtype {v_cache.dtype}")
    check(k_cache.shape[3] == q.shape[2], f"head_dim of q ({q.shape[2]}) != head_dim of the cache ({k_cache.shape[3]})")
    check(q.shape[1] % k_cache.shape[2] == 0,
          f"query heads ({q.shape[1]}) must be a multiple of kv_heads ({k_cache.shape[2]})")
    check(k_cache.shape[1] >= 1, "block_size must be >= 1")


def check_quant_caches(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, quant: object) -> None:
    """:func:`check_attention_caches`, or for a quantized cache (``quant`` not None): uint8 codes of
    ``head_dim`` (or ``head_dim / 2`` for int4, mode 4) per head."""
    if quant is None:
        check_attention_caches(q, k_cache, v_cache)
        return
    dev = q.device
    check_tensor("q", q, 3, dev)
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(name, t, 4, dev, (torch.uint8,))
    check(v_cache.shape[1:] == k_cache.shape[1:],
          f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    packed = q.shape[2] // 2 if getattr(quant, "mode", 0) == 4 else q.shape[2]
    check(k_cache.shape[3] == packed, f"quantized cache stores {k_cache.shape[3]} bytes per head, q's head_dim "
                                      f"{q.shape[2]} needs {packed}")
    check(q.shape[1] % k_cache.shape[2] == 0,
          f"query heads ({q.shape[1]}) must be a multiple of kv_heads ({k_cache.shape[2]})")
