"""Triton write_kv and copy_blocks against their torch references."""

from __future__ import annotations

import pytest
import torch

from kvlab.kernels.cache_ops import write_kv
from tests.kernels.paged_cases import DEVICE, randn

wk = pytest.importorskip("kvlab.kernels.write_kv_triton")
cb = pytest.importorskip("kvlab.kernels.copy_blocks_triton")


def _strided_caches(num_blocks, block_size, kvh, D, dtype, device=DEVICE):
    buf = randn(num_blocks, block_size, kvh, 2, D + 4, dtype=dtype, device=device, seed=3)
    return buf[..., 0, :D], buf[..., 1, :D], buf


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_write_kv_matches_reference(block_size, dtype):
    kvh, D, nb = 3, 24, 6
    k_c, v_c, _ = _strided_caches(nb, block_size, kvh, D, dtype)
    k_r, v_r = k_c.clone(), v_c.clone()
    T = min(nb * block_size, 7)
    slots = torch.randperm(nb * block_size, generator=torch.Generator().manual_seed(0))[:T].to(DEVICE)
    # fp32 K/V cast into an fp16 cache too; not into bf16: the interpreter truncates fp32 -> bf16
    # where torch (and compiled Triton) round to nearest even
    src_dtype = torch.float32 if dtype != torch.bfloat16 else dtype
    k = randn(T, kvh, D, dtype=src_dtype, seed=4)
    v = randn(T, kvh, D, dtype=src_dtype, seed=5)
    wk.write_kv_triton(k, v, k_c, v_c, slots.to(torch.int32))
    write_kv(k, v, k_r, v_r, slots)
    assert torch.equal(k_c, k_r) and torch.equal(v_c, v_r)


def test_write_kv_negative_slots_skip():
    k_c, v_c, _ = _strided_caches(4, 4, 2, 16, torch.float32)
    before_k, before_v = k_c.clone(), v_c.clone()
    k = randn(3, 2, 16, dtype=torch.float32, seed=6)
    slots = torch.tensor([5, -1, 14], dtype=torch.int64, device=DEVICE)
    wk.write_kv_triton(k, -k, k_c, v_c, slots)
    before_k.view(-1, 2, 16)[[5, 14]] = k[[0, 2]]
    before_v.view(-1, 2, 16)[[5, 14]] = -k[[0, 2]]
    assert torch.equal(k_c, before_k) and torch.equal(v_c, before_v)


def test_write_kv_rejects_bad_args():
    k_c, v_c, _ = _strided_caches(4, 4, 2, 16, torch.float32)
    k = randn(3, 2, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="slot_mapping"):
        wk.write_kv_triton(k, k, k_c, v_c, torch.zeros(2, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="does not fit"):
        wk.write_kv_triton(k[:, :1], k[:, :1], k_c, v_c, torch.zeros(3, dtype=torch.int64, device=DEVICE))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_copy_blocks_matches_reference(dtype):
    cache = randn(2 * 3, 9, 4, 2, 20, dtype=dtype, seed=7)  # [layers*2, blocks, block_size, kvh, D]
    ref = cache.clone()
    src = torch.tensor([0, 4, 4, 8], dtype=torch.int64, device=DEVICE)
    dst = torch.tensor([1, 2, 5, 7], dtype=torch.int64, device=DEVICE)
    cb.copy_blocks_triton(cache, src, dst, block=64)  # 160 elements per block: 3 chunks
    cb.copy_blocks_ref(ref, src, dst)
    assert torch.equal(cache, ref)
    assert torch.equal(cache[:, 5], cache[:, 4]) and not torch.equal(cache[:, 3], cache[:, 4])


def test_copy_blocks_strided_planes_and_checks():
    big = randn(4, 2, 10, 8, 6, dtype=torch.float32, seed=8)
    view = big[1:3].flatten(0, 1)  # P=4 planes of a bigger tensor: dims 2.. dense
    ref = view.clone()
    src, dst = torch.tensor([3, 9], device=DEVICE), torch.tensor([0, 1], device=DEVICE)
    cb.copy_blocks_triton(view, src, dst)
    cb.copy_blocks_ref(ref, src, dst)
    assert torch.equal(view, ref) and torch.equal(big[1:3].flatten(0, 1), ref)
    with pytest.raises(ValueError, match="dense"):
        cb.copy_blocks_triton(big[..., :3], src, dst)
    with pytest.raises(ValueError, match="src"):
        cb.copy_blocks_triton(view, src.int(), dst)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cache_kernels_cuda_real_sizes():
    k_c, v_c, _ = _strided_caches(4096, 16, 8, 128, torch.bfloat16, device="cuda")
    k_r, v_r = k_c.clone(), v_c.clone()
    slots = torch.randperm(4096 * 16, device="cuda")[:8192]
    k = randn(8192, 8, 128, dtype=torch.bfloat16, device="cuda")
    wk.write_kv_triton(k, k * 2, k_c, v_c, slots)
    write_kv(k, k * 2, k_r, v_r, slots)
    assert torch.equal(k_c, k_r) and torch.equal(v_c, v_r)
    cache = randn(2 * 30, 1024, 16, 8, 128, dtype=torch.bfloat16, device="cuda")
    ref = cache.clone()
    perm = torch.randperm(1024, device="cuda")
    src, dst = perm[:200], perm[200:400]
    cb.copy_blocks_triton(cache, src, dst)
    cb.copy_blocks_ref(ref, src, dst)
    assert torch.equal(cache, ref)
