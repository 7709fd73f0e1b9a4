"""Triton paged decode attention against its torch reference (interpreter on CPU, real sizes on CUDA)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.paged_cases import DEVICE, make_paged, randn, tolerance

dec = pytest.importorskip("kvlab.kernels.decode_attention")

LENS = [1, 37, 19, 16]  # not multiples of the block size (except one), a one-token context


def _run(lens, block_size, kvh, group, dtype, layout="shuffled", num_splits=1, head_dim=24, device=DEVICE,
         block_n=None, max_seq_len=None):
    case = make_paged(lens, block_size, kvh, head_dim, dtype, layout, device=device)
    q = randn(len(lens), kvh * group, head_dim, dtype=dtype, device=device)
    scale = head_dim ** -0.5
    out = dec.decode_attention(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, scale,
                               num_splits=num_splits, block_n=block_n, max_seq_len=max_seq_len)
    ref = dec.decode_attention_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, scale)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref.float(), **tolerance(dtype))


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("group", [1, 3, 8])
def test_decode_gqa_block_sizes(block_size, group):
    _run(LENS, block_size, 2, group, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_half_precision(dtype):
    _run(LENS, 16, 2, 3, dtype)


@pytest.mark.parametrize("layout", ["contiguous", "shared_prefix"])
def test_decode_table_layouts(layout):
    _run([33, 40, 7], 4, 1, 3, torch.float32, layout=layout)


@pytest.mark.parametrize("num_splits", [2, 3, 7])
def test_decode_split_k_matches(num_splits):
    # tiles of 16 positions so a 37-token context really spans several splits; 7 > needed splits
    _run(LENS, 4, 2, 3, torch.float16, num_splits=num_splits, block_n=16)


def test_decode_split_k_with_host_max_seq_len():
    _run(LENS, 4, 2, 3, torch.float32, num_splits=3, block_n=16, max_seq_len=max(LENS))


def test_decode_non_power_of_two_block_and_head_dim():
    _run([10, 23], 3, 1, 2, torch.float32, head_dim=40)


def test_decode_writes_into_out_and_rejects_bad_args():
    case = make_paged([5, 9], 4, 2, 16, torch.float32)
    q = randn(2, 4, 16, dtype=torch.float32)
    out = torch.zeros_like(q)
    got = dec.decode_attention(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, 0.25, out=out)
    assert got.data_ptr() == out.data_ptr() and out.abs().sum() > 0
    with pytest.raises(ValueError, match="block_tables"):
        dec.decode_attention(q, case.k_cache, case.v_cache, case.block_tables.long(), case.seq_lens, 0.25)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        dec.decode_attention(q[:, :3], case.k_cache, case.v_cache, case.block_tables, case.seq_lens, 0.25)
    with pytest.raises(ValueError, match="head_dim"):
        dec.decode_attention(q[..., :8], case.k_cache, case.v_cache, case.block_tables, case.seq_lens, 0.25)


def test_choose_num_splits():
    assert dec.choose_num_splits(32768, 1, 8, 132) == 64  # one long sequence: 4 x 132 / 8 = 66, capped
    assert dec.choose_num_splits(4096, 16, 8, 132) == 5  # 128 programs -> 5 splits of ~820 tokens
    assert dec.choose_num_splits(1024, 1, 8, 132) == 4  # limited by >= 256 tokens per split
    assert dec.choose_num_splits(32768, 64, 8, 132) == 2  # 512 programs, just under 4 x 132
    assert dec.choose_num_splits(32768, 256, 8, 132) == 1  # 2048 programs fill the device
    assert dec.choose_num_splits(300, 1, 1, 132) == 1  # too short to split
    assert dec.choose_num_splits(10**6, 1, 1, 132) == dec.MAX_SPLITS
    assert dec.choose_num_splits(32768, 1, 8, 0) == 1  # no GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("block_size", [1, 16, 32, 64, 128])
@pytest.mark.parametrize("num_splits", [1, None, 8])
def test_decode_cuda_real_sizes(block_size, num_splits):
    gen = torch.Generator().manual_seed(block_size)
    lens = torch.randint(1, 8192, (64,), generator=gen).tolist()
    lens[0] = 8192
    _run(lens, block_size, 8, 4, torch.bfloat16, num_splits=num_splits, head_dim=128, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group", [1, 3, 8])
def test_decode_cuda_dtypes_groups(dtype, group):
    _run([1, 4000, 777, 8192, 15], 16, 2, group, dtype, num_splits=None, head_dim=64, device="cuda")


@given(st.lists(st.integers(1, 60), min_size=1, max_size=4), st.sampled_from([1, 2, 8, 16]),
       st.sampled_from([1, 3, 4]), st.integers(1, 5), st.sampled_from(["shuffled", "contiguous", "shared_prefix"]))
@settings(max_examples=6, deadline=None, derandomize=True)
def test_decode_random_batches(lens, block_size, group, num_splits, layout):
    if layout == "shared_prefix" and len(lens) < 2:
        lens = lens + [lens[0]]
    _run(lens, block_size, 1, group, torch.float32, layout=layout, num_splits=num_splits, head_dim=16, block_n=16)
