"""Triton packed prefill attention over a paged context against its torch reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.paged_cases import DEVICE, make_paged, randn, tolerance

pre = pytest.importorskip("kvlab.kernels.prefill_attention")

# (context length incl. new tokens, new tokens): two decodes, a prefix-hit / later chunk, a fresh prefill
MIXED = [(37, 1), (5, 1), (29, 11), (13, 13)]


def _run(seqs, block_size, kvh, group, dtype, layout="shuffled", head_dim=24, device=DEVICE, **kw):
    lens = [L for L, _ in seqs]
    case = make_paged(lens, block_size, kvh, head_dim, dtype, layout, device=device)
    qsl = [0]
    for _, n in seqs:
        qsl.append(qsl[-1] + n)
    qsl_t = torch.tensor(qsl, dtype=torch.int32, device=device)
    q = randn(qsl[-1], kvh * group, head_dim, dtype=dtype, device=device)
    scale = head_dim ** -0.5
    out = pre.prefill_attention(q, case.k_cache, case.v_cache, case.block_tables, qsl_t, case.seq_lens, scale, **kw)
    ref = pre.prefill_attention_ref(q, case.k_cache, case.v_cache, case.block_tables, qsl_t, case.seq_lens, scale)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref.float(), **tolerance(dtype))
    return out


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("group", [1, 3, 8])
def test_prefill_mixed_batch(block_size, group):
    _run(MIXED, block_size, 2, group, torch.float32, max_query_len=13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prefill_half_precision(dtype):
    _run(MIXED, 16, 2, 3, dtype)


@pytest.mark.parametrize("layout", ["contiguous", "shared_prefix"])
def test_prefill_table_layouts(layout):
    # the second sequence is a prefix hit: its first blocks are the first sequence's
    _run([(24, 24), (30, 6), (9, 2)], 4, 1, 3, torch.float32, layout=layout)


def test_prefill_multi_tile_rows_and_keys():
    # 40 new tokens x G=3 = 120 rows over 16-row tiles; 16-position key tiles
    _run([(45, 40), (3, 0), (17, 1)], 4, 1, 3, torch.float32, block_m=16, block_n=16)


def test_prefill_decode_rows_equal_decode_kernel():
    dec = pytest.importorskip("kvlab.kernels.decode_attention")
    seqs = [(37, 1), (5, 1), (20, 1)]
    case = make_paged([L for L, _ in seqs], 4, 2, 16, torch.float32)
    q = randn(3, 4, 16, dtype=torch.float32)
    qsl = torch.tensor([0, 1, 2, 3], dtype=torch.int32, device=DEVICE)
    a = pre.prefill_attention(q, case.k_cache, case.v_cache, case.block_tables, qsl, case.seq_lens, 0.25)
    b = dec.decode_attention(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, 0.25)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_prefill_rejects_bad_args():
    case = make_paged([5, 9], 4, 2, 16, torch.float32)
    q = randn(6, 4, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="query_start_loc"):
        pre.prefill_attention(q, case.k_cache, case.v_cache, case.block_tables,
                              torch.tensor([0, 6], dtype=torch.int32, device=DEVICE), case.seq_lens, 0.25)
    with pytest.raises(ValueError, match="seq_lens"):
        pre.prefill_attention(q, case.k_cache, case.v_cache, case.block_tables,
                              torch.tensor([0, 3, 6], dtype=torch.int32, device=DEVICE), case.seq_lens.long(), 0.25)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("block_size", [1, 16, 32, 64, 128])
def test_prefill_cuda_real_sizes(block_size):
    gen = torch.Generator().manual_seed(block_size)
    seqs = [(int(L), 1) for L in torch.randint(1, 8192, (48,), generator=gen)]  # decodes
    seqs += [(8192, 512), (3000, 3000), (5000, 1000), (1, 1), (700, 699)]  # chunks, fresh, prefix hits
    _run(seqs, block_size, 8, 4, torch.bfloat16, head_dim=128, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group", [1, 3, 8])
def test_prefill_cuda_dtypes_groups(dtype, group):
    _run([(1000, 1000), (4000, 333), (9, 1), (2048, 17)], 16, 2, group, dtype, head_dim=64, device="cuda")


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 6)), min_size=1, max_size=4),
       st.sampled_from([1, 2, 5, 16]), st.sampled_from([1, 2, 4]), st.sampled_from(["shuffled", "contiguous"]))
@settings(max_examples=6, deadline=None, derandomize=True)
def test_prefill_random_batches(seqs, block_size, group, layout):
    # n new tokens of a context of L: n in 1..L (a drawn 0 means the whole context is new)
    seqs = [(L, min(L, n) if n else L) for L, n in seqs]
    _run(seqs, block_size, 1, group, torch.float32, layout=layout, head_dim=16, block_m=16, block_n=16)
