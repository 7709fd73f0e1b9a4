"""Fused quantized paths in Triton against the torch reference, under the interpreter (tiny shapes).

One mixed step (a decode, a fresh prefill, a later chunk over a cached prefix) on a one-layer
cache: the Triton write must store the same codes and scales as the scheme's torch write (fp8,
int8, int4: bit for bit), and the Triton decode and prefill kernels, dequantizing inside the tile
loads, must give the torch backend's attention. kivi2 has no fused kernel: the Triton backend
dequantizes the step's blocks first; it is checked the same way.
"""

from __future__ import annotations

import os

import pytest
import torch

from kvlab.kernels.torch_backend import TorchBackend
from tests.quant_schemes.helpers import QUANTIZED, cache_for

TRITON_OK = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not TRITON_OK, reason="Triton needs CUDA or TRITON_INTERPRET=1")
B, KVH, H, HD = 4, 2, 4, 16
SPANS = [(0, 6, [3, 0]), (5, 1, [1, 6]), (4, 3, [2, 5])]  # fresh prefill, decode, later chunk
PRIOR = [(0, 5, [1, 6]), (0, 4, [2, 5])]  # the cached context of the decode and the chunk


def quant_of(scheme: str):
    if scheme == "fp8_e5m2":  # one fp8 format runs with calibrated scales
        return {"name": "fp8_e5m2", "scale": "calibrated"}
    return {"name": "kivi2", "group_size": 4, "residual": 2} if scheme == "kivi2" else scheme


def step(cache, backend, spans, seed: int) -> torch.Tensor:
    meta = backend.build_metadata(spans, B, torch.device("cpu"))
    n = sum(s[1] for s in spans)
    g = torch.Generator().manual_seed(seed)
    k, v, q = (torch.randn(n, KVH, HD, generator=g), torch.randn(n, KVH, HD, generator=g),
               torch.randn(n, H, HD, generator=g))
    layer = cache.layers[0]
    backend.write_kv(layer, k, v, meta)
    return backend.forward(layer, q, meta, HD ** -0.5)


@pytest.mark.parametrize("scheme", QUANTIZED)
def test_triton_write_decode_prefill_match_torch(scheme: str) -> None:
    from kvlab.kernels.triton_backend import TritonBackend

    ref_cache = cache_for(quant_of(scheme), num_blocks=8, block_size=B, kvh=KVH, hd=HD)
    tri_cache = cache_for(quant_of(scheme), num_blocks=8, block_size=B, kvh=KVH, hd=HD)
    step(ref_cache, TorchBackend(), PRIOR, seed=1)
    step(tri_cache, TritonBackend(), PRIOR, seed=1)
    ref = step(ref_cache, TorchBackend(), SPANS, seed=2)
    got = step(tri_cache, TritonBackend(), SPANS, seed=2)
    assert torch.equal(ref_cache.data, tri_cache.data)
    for name, t in ref_cache.metadata.items():
        assert torch.equal(t, tri_cache.metadata[name]), name
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    if scheme == "fp8_e5m2":
        assert not torch.all(ref_cache.scheme.scales == 1.0)  # calibrated, the same in both
        assert torch.equal(ref_cache.scheme.scales, tri_cache.scheme.scales)


def test_fused_read_really_dequantizes() -> None:
    """Reading int8 codes as if they were int4 gives a different answer: the check can fail."""
    from kvlab.kernels.decode_attention import decode_attention
    from kvlab.kernels.quant.fused import fused_args

    cache = cache_for("int8", num_blocks=8, block_size=B, kvh=KVH, hd=HD)
    step(cache, TorchBackend(), PRIOR, seed=1)
    layer = cache.layers[0]
    q = torch.randn(1, H, HD)
    bt, lens = torch.tensor([[1, 6]], dtype=torch.int32), torch.tensor([5], dtype=torch.int32)
    fa = fused_args(layer)
    good = decode_attention(q, layer.k, layer.v, bt, lens, HD ** -0.5, quant=fa)
    fa.mode = 1  # misread the int8 codes as fp8
    bad = decode_attention(q, layer.k, layer.v, bt, lens, HD ** -0.5, quant=fa)
    assert not torch.allclose(good, bad, atol=1e-3)
