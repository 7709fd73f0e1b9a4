"""Builders of paged KV caches for kernel tests: block tables in the shapes every allocator makes.

Every cache slot that no sequence may read (free blocks, the tail of a last partial block) holds
NaN, and every padding entry of a block table points at a NaN-filled block, so a kernel that reads
past a sequence's context returns NaN and fails the comparison. The caches are strided views (K
and V interleaved in one buffer with a padded head dim), as one layer of a bigger tensor would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("shuffled", "contiguous", "shared_prefix")
# the small comparisons run in the interpreter on a CPU and compiled on a GPU machine
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class PagedCase:
    """One layer's caches plus per-sequence tables (int32, padded with a NaN block)."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def make_paged(lens: list[int], block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
               layout: str = "shuffled", device: str | torch.device = DEVICE, seed: int = 0,
               extra_blocks: int = 2) -> PagedCase:
    """Caches holding random K/V for sequences of ``lens`` tokens, tables laid out as ``layout``:

    * ``shuffled``: blocks drawn in random order from the pool (paged allocator);
    * ``contiguous``: each sequence owns a run of consecutive block ids (contiguous allocator);
    * ``shared_prefix``: like shuffled, but sequence 1 starts with sequence 0's full blocks
      (prefix sharing; sequence 1's prefix therefore equals sequence 0's).
    """
    assert layout in LAYOUTS, f"layout {layout!r} not in {LAYOUTS}"
    gen = torch.Generator().manual_seed(seed)
    nblocks = [_cdiv(n, block_size) for n in lens]
    shared = 0
    if layout == "shared_prefix":
        assert len(lens) >= 2, "shared_prefix needs two sequences"
        shared = min(lens[0] // block_size, nblocks[1] - 1)
    total = sum(nblocks) - shared + len(lens) + extra_blocks + 1  # + room for gaps
    ids = torch.randperm(total, generator=gen) if layout != "contiguous" else torch.arange(total)
    nan_block = int(ids[-1])
    width = max(nblocks) + 2
    tables = torch.full((len(lens), width), nan_block, dtype=torch.int32)
    tails: dict[int, int] = {}  # last partial block -> number of valid slots in it
    nxt = 0
    for i, nb in enumerate(nblocks):
        first = 0
        if i == 1 and shared:
            tables[1, :shared] = tables[0, :shared]
            first = shared
        if layout == "contiguous" and i > 0:
            nxt += 1  # a free gap between runs
        tables[i, first:nb] = ids[nxt: nxt + nb - first].to(torch.int32)
        nxt += nb - first
        if lens[i] % block_size:
            tails[int(tables[i, nb - 1])] = lens[i] % block_size
    assert nxt <= total - 1, "pool too small"
    pad = 8
    gen = torch.Generator(device=device).manual_seed(seed)
    buf = torch.full((total, block_size, kv_heads, 2, head_dim + pad), float("nan"), dtype=dtype, device=device)
    blocks = ids[:nxt].to(device)
    buf[blocks] = torch.randn(nxt, *buf.shape[1:], generator=gen, device=device).to(dtype)
    for b, n in tails.items():  # the unused tail of a last partial block
        buf[b, n:] = float("nan")
    k_cache, v_cache = buf[:, :, :, 0, :head_dim], buf[:, :, :, 1, :head_dim]
    assert not k_cache.is_contiguous()
    return PagedCase(k_cache, v_cache, tables.to(device), torch.tensor(lens, dtype=torch.int32, device=device))


def randn(*shape: int, dtype: torch.dtype, device: str | torch.device = DEVICE, seed: int = 1) -> torch.Tensor:
    """Random normal tensor drawn on ``device`` with a fixed seed."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=device).to(dtype)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """assert_close tolerances against an fp32 reference."""
    if dtype == torch.float32:
        return {"atol": 1e-4, "rtol": 1e-4}
    if dtype == torch.float16:
        return {"atol": 5e-3, "rtol": 5e-3}
    return {"atol": 3e-2, "rtol": 3e-2}
