"""KVCache: layout, bytes per block (the formula the simulator shares), block copy and swap with metadata."""

from __future__ import annotations

import pytest
import torch

from kvlab.kernels import BlockMetadata, KVCache, KVSpec
from kvlab.models.shapes import ModelShape

SPEC = KVSpec(num_layers=3, num_kv_heads=2, head_dim=8, block_size=4, dtype=torch.float32)
SCALES = BlockMetadata("scale", (4, 2), torch.float16)  # one scale per token per KV head
META_SPEC = KVSpec(3, 2, 8, 4, torch.float32, (SCALES,))


def filled(spec: KVSpec, num_blocks: int, num_cpu: int = 0) -> KVCache:
    cache = KVCache(spec, num_blocks, num_cpu)
    cache.data.copy_(torch.randn(cache.data.shape, generator=torch.Generator().manual_seed(0)))
    for t in cache.metadata.values():
        t.copy_(torch.rand(t.shape, generator=torch.Generator().manual_seed(1)))
    return cache


def test_layout_and_layer_views_alias_the_data():
    cache = KVCache(SPEC, 5)
    assert cache.data.shape == (3, 2, 5, 4, 2, 8)
    layer = cache.layers[1]
    layer.v[2, 3, 1] = 7.0  # writes through the view
    assert cache.data[1, 1, 2, 3, 1].eq(7.0).all()
    assert layer.k.shape == (5, 4, 2, 8) and layer.k.is_contiguous()


def test_bytes_per_block_counts_data_and_metadata():
    assert SPEC.bytes_per_block == 4 * 2 * 3 * 2 * 8 * 4
    assert KVCache(SPEC, 5).nbytes == 5 * SPEC.bytes_per_block
    assert META_SPEC.bytes_per_block == SPEC.bytes_per_block + 3 * 2 * 4 * 2 * 2
    assert KVCache(META_SPEC, 5).nbytes == 5 * META_SPEC.bytes_per_block


def test_the_simulator_shape_uses_the_same_formula():
    shape = ModelShape("x", "llama", 30, 576, 9, 3, 64, 1536, 49152, 8192, 2)
    spec = KVSpec(30, 3, 64, 16, torch.bfloat16)
    assert shape.kv_bytes_per_token == spec.bytes_per_token
    assert 16 * shape.kv_bytes_per_token == spec.bytes_per_block


def test_copy_blocks_moves_data_and_metadata_and_nothing_else():
    cache = filled(META_SPEC, 6)
    before = cache.data.clone()
    scale_before = cache.metadata["scale"].clone()
    cache.copy_blocks([(1, 4), (3, 0)])
    assert torch.equal(cache.data[:, :, 4], before[:, :, 1]) and torch.equal(cache.data[:, :, 0], before[:, :, 3])
    assert torch.equal(cache.metadata["scale"][:, :, 4], scale_before[:, :, 1])
    assert torch.equal(cache.metadata["scale"][:, :, 0], scale_before[:, :, 3])
    for b in (1, 2, 3, 5):
        assert torch.equal(cache.data[:, :, b], before[:, :, b])


def test_swap_out_then_in_to_other_blocks_restores_everything():
    cache = filled(META_SPEC, 6, num_cpu=3)
    before = cache.data.clone()
    scale_before = cache.metadata["scale"].clone()
    cache.swap_out([(2, 0), (5, 2)])
    cache.data.zero_()
    cache.metadata["scale"].zero_()
    cache.swap_in([(0, 1), (2, 3)])
    assert torch.equal(cache.data[:, :, 1], before[:, :, 2]) and torch.equal(cache.data[:, :, 3], before[:, :, 5])
    assert torch.equal(cache.metadata["scale"][:, :, 3], scale_before[:, :, 5])
    assert cache.data[:, :, [0, 2, 4, 5]].eq(0).all()


def test_swap_without_cpu_blocks_and_empty_pool_fail_clearly():
    with pytest.raises(RuntimeError, match="swap_space_gib"):
        KVCache(SPEC, 2).swap_out([(0, 0)])
    with pytest.raises(ValueError, match="num_blocks"):
        KVCache(SPEC, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_swap_through_pinned_memory_on_cuda():
    cache = KVCache(META_SPEC, 6, 3, device="cuda")
    assert cache.cpu_data is not None and cache.cpu_data.is_pinned()
    cache.data.normal_()
    before = cache.data.clone()
    cache.swap_out([(2, 0), (5, 2)])
    cache.data.zero_()
    cache.swap_in([(0, 1), (2, 3)])
    torch.cuda.synchronize()
    assert torch.equal(cache.data[:, :, 1], before[:, :, 2]) and torch.equal(cache.data[:, :, 3], before[:, :, 5])
