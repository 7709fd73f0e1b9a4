"""Quantize on write -> dequantize on read, through the KV cache, within each scheme's bound.

Inputs: random normal, rows with an outlier, all-equal groups, and zeros. Bounds (per element):
int8 absmax/254 of its (token, head) row; int4 (max-min)/30 of its 32-channel group; fp8
2^-4 (e4m3) / 2^-3 (e5m2) relative plus half the smallest subnormal; kivi2 (max-min)/6 of its
group (keys: per channel over the block's tokens; values: 32 channels of a token), and exact
values inside the full-precision residual window.
"""

from __future__ import annotations

import pytest
import torch

from kvlab.kv_quant_format import KVQuantConfig
from tests.quant_schemes.helpers import QUANTIZED, cache_for, read_seq, write_seq

N, KVH, HD, B = 48, 2, 64, 16  # three blocks


def inputs(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, KVH, HD, generator=g) * 2
    if kind == "outliers":
        x[::5, :, 7] = 300.0
        x[3, 1, 40] = -250.0
    elif kind == "equal":
        x = torch.full((N, KVH, HD), 0.7)
    elif kind == "zeros":
        x = torch.zeros(N, KVH, HD)
    return x


def bound(scheme: str, x: torch.Tensor, half: int, block_size: int = B) -> torch.Tensor:
    """Per-element error bound of ``scheme`` for ``x`` [N, kvh, hd] (K if half 0)."""
    eps = 1e-5 * (1 + x.abs())
    if scheme == "int8":
        return x.abs().amax(-1, keepdim=True) / 254 + eps
    if scheme.startswith("fp8"):
        rel, sub = (2.0 ** -4, 2.0 ** -10) if scheme == "fp8_e4m3" else (2.0 ** -3, 2.0 ** -17)
        return rel * x.abs() + sub + eps
    g = x.unflatten(-1, (-1, 32))
    if scheme == "int4":
        return ((g.amax(-1) - g.amin(-1)) / 30)[..., None].expand_as(g).flatten(-2) + eps
    if half == 1:  # kivi2 values: per token, 32-channel groups, 2 bits
        return ((g.amax(-1) - g.amin(-1)) / 6)[..., None].expand_as(g).flatten(-2) + eps
    t = x.view(-1, block_size, *x.shape[1:])  # kivi2 keys: per channel over the block's tokens
    r = (t.amax(1, keepdim=True) - t.amin(1, keepdim=True)) / 6
    return r.expand_as(t).reshape(x.shape) + eps


@pytest.mark.parametrize("kind", ["random", "outliers", "equal", "zeros"])
@pytest.mark.parametrize("scheme", QUANTIZED)
def test_roundtrip_within_bound(scheme: str, kind: str) -> None:
    quant = {"name": "kivi2", "residual": 0} if scheme == "kivi2" else scheme
    cache = cache_for(quant, num_blocks=6, block_size=B, kvh=KVH, hd=HD)
    k, v = inputs(kind), inputs(kind, seed=1) * 0.5
    table = [4, 1, 3]
    write_seq(cache, table, k, v)
    for half, x in ((0, k), (1, v)):
        got = read_seq(cache, table, N, half)
        err = (got - x).abs()
        assert torch.all(err <= bound(scheme, x, half)), f"{scheme} {kind} half={half}: max err {err.max():.4g}"
        if kind in ("equal", "zeros") and not scheme.startswith("fp8"):
            assert torch.equal(got, x)  # one value per group: scale 0, exact
        if kind == "zeros":
            assert torch.equal(got, x)


def test_the_bound_can_fail() -> None:
    """int4 data read back with an int8 bound fails: the check has teeth."""
    cache = cache_for("int4", num_blocks=6, block_size=B, kvh=KVH, hd=HD)
    k = inputs("random")
    write_seq(cache, [0, 1, 2], k, k)
    err = (read_seq(cache, [0, 1, 2], N, 0) - k).abs()
    assert not torch.all(err <= bound("int8", k, 0))


def test_kivi2_window_is_full_precision_and_older_tokens_are_quantized() -> None:
    cfg = KVQuantConfig.parse({"name": "kivi2", "residual": 20, "residual_pool_fraction": 1.0})
    cache = cache_for(cfg, num_blocks=6, block_size=B, kvh=KVH, hd=HD)
    k, v = inputs("random"), inputs("random", seed=2)
    table = [5, 0, 2]
    for t in range(N):  # decode-style: one token per step
        write_seq(cache, table, k[t:t + 1], v[t:t + 1], start=t)
    got = read_seq(cache, table, N, 0)
    # positions >= 48 - 20 = 28 are in the window: block 1 (16..31) and block 2 stay open, exact
    assert torch.equal(got[16:], k[16:])
    assert not torch.equal(got[:16], k[:16])  # block 0 left the window: 2-bit codes
    assert torch.all((got[:16] - k[:16]).abs() <= bound("kivi2", k[:16], 0))
    assert cache.scheme.num_open == 2


def test_kivi2_full_pool_quantizes_early_and_counts_it() -> None:
    cfg = KVQuantConfig.parse({"name": "kivi2", "residual": 1000, "residual_pool_fraction": 0.2})
    cache = cache_for(cfg, num_blocks=10, block_size=B, kvh=KVH, hd=HD)  # 2 residual slots
    k = inputs("random")
    write_seq(cache, [0, 1, 2], k, k)
    assert cache.scheme.num_open == 2 and cache.scheme.early_quantized >= 1
    got = read_seq(cache, [0, 1, 2], N, 0)
    assert torch.all((got - k).abs() <= bound("kivi2", k, 0))
