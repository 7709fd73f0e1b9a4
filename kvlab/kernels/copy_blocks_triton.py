"""Copy whole blocks of a paged cache (copy-on-write, defragmentation), in Triton.

The cache is any tensor ``[P, num_blocks, *rest]`` (``P`` = layers x 2 for kvlab's one-tensor
layout, or 1) whose per-block part ``rest`` is dense; ``P`` and the block dim may have any stride.
Grid ``(num_pairs, P, cdiv(block_numel, BLOCK))``: one program copies one ``BLOCK``-element chunk
of block ``src[j]`` to block ``dst[j]`` in plane ``p``. :func:`copy_blocks_ref` is the torch
reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kvlab.kernels.triton_utils import check, check_tensor

_ANY_DTYPE = (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.float64, torch.int32)


@triton.jit
def _copy_blocks_kernel(cache_ptr, src_ptr, dst_ptr, numel, s_p, s_b, BLOCK: tl.constexpr):
    j = tl.program_id(0)
    p = tl.program_id(1).to(tl.int64)
    chunk = tl.program_id(2)
    src = tl.load(src_ptr + j).to(tl.int64)
    dst = tl.load(dst_ptr + j).to(tl.int64)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(cache_ptr + p * s_p + src * s_b + offs, mask=mask)
    tl.store(cache_ptr + p * s_p + dst * s_b + offs, x, mask=mask)


def _dense_tail(t: torch.Tensor) -> bool:
    """Whether dims 2.. of ``t`` are laid out densely (row-major, no gaps)."""
    expected = 1
    for size, stride in zip(reversed(t.shape[2:]), reversed(t.stride()[2:])):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def copy_blocks_triton(cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, *, block: int = 1024) -> None:
    """``cache[:, dst[j]] = cache[:, src[j]]`` for every j. Mutates ``cache``.

    Args:
        cache: [P, num_blocks, *rest] with dense ``rest`` (e.g. [layers*2, blocks, block_size, kv_heads, D]).
        src, dst: int64 [N] block ids. No ``dst`` may appear in ``src`` (copies run in parallel).
        block: elements per program.
    """
    dev = cache.device
    check(isinstance(cache, torch.Tensor) and cache.dim() >= 2,
          f"cache must be a tensor [P, num_blocks, ...], got {getattr(cache, 'shape', type(cache))}")
    check_tensor("cache", cache, cache.dim(), dev, _ANY_DTYPE)
    check_tensor("src", src, 1, dev, (torch.int64,))
    check_tensor("dst", dst, 1, dev, (torch.int64,))
    check(src.shape == dst.shape, f"src {tuple(src.shape)} and dst {tuple(dst.shape)} must have the same length")
    check(_dense_tail(cache), f"cache dims 2.. must be dense; got shape {tuple(cache.shape)} strides {cache.stride()}")
    n, planes = src.shape[0], cache.shape[0]
    numel = math.prod(cache.shape[2:])
    if n == 0 or planes == 0 or numel == 0:
        return
    grid = (n, planes, triton.cdiv(numel, block))
    _copy_blocks_kernel[grid](cache, src, dst, numel, cache.stride(0), cache.stride(1), BLOCK=block, num_warps=4)


def copy_blocks_ref(cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """Torch reference of :func:`copy_blocks_triton`. Mutates ``cache``."""
    cache[:, dst] = cache[:, src]
