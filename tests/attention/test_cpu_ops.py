"""kvlab's native CPU ops (kvlab.kernels.cpu_ops): the C paged-decode kernel against a torch
reference on drawn batches, and every branch where the op is not there (the caller's torch path)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.kernels import cpu_ops

needs_ops = pytest.mark.skipif(cpu_ops.load() is None, reason=f"kvlab CPU ops: {cpu_ops.status()}")


def reference(q, k_cache, v_cache, tables, lens, scale):
    """Gather each sequence's first ``len`` tokens, softmax over them, in fp64."""
    nd, H, hd = q.shape
    _, B, kvh, _ = k_cache.shape
    out = torch.empty(nd, H, hd, dtype=torch.float64)
    for s in range(nd):
        n = int(lens[s])
        blocks = tables[s, : (n + B - 1) // B]
        k = k_cache[blocks].reshape(-1, kvh, hd)[:n].double().repeat_interleave(H // kvh, 1)
        v = v_cache[blocks].reshape(-1, kvh, hd)[:n].double().repeat_interleave(H // kvh, 1)
        p = (torch.einsum("hd,thd->ht", q[s].double(), k) * scale).softmax(-1)
        out[s] = torch.einsum("ht,thd->hd", p, v)
    return out


@st.composite
def batches(draw):
    B = draw(st.sampled_from([1, 4, 16, 32]))
    kvh = draw(st.integers(1, 4))
    group = draw(st.sampled_from([1, 2, 3, 8]))
    hd = draw(st.sampled_from([8, 64, 128]))
    lens = draw(st.lists(st.integers(1, 80), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    return B, kvh, group, hd, lens, seed


@needs_ops
@settings(max_examples=40, deadline=None)
@given(batches())
def test_paged_decode_matches_reference_and_reads_only_its_tokens(batch):
    B, kvh, group, hd, lens, seed = batch
    g = torch.Generator().manual_seed(seed)
    need = [(n + B - 1) // B for n in lens]
    W = max(need) + 1  # one padding column per row: the kernel must stop at each row's length
    num_blocks = sum(need) + 1  # the last block is never assigned: it pads the tables
    perm = torch.randperm(num_blocks - 1, generator=g)  # blocks scattered over the cache
    tables = torch.full((len(lens), W), num_blocks - 1, dtype=torch.long)
    k_cache = torch.full((num_blocks, B, kvh, hd), float("nan"))  # every slot not written: NaN
    v_cache = torch.full((num_blocks, B, kvh, hd), float("nan"))
    used = 0
    for s, n in enumerate(lens):
        ids = perm[used:used + need[s]]
        used += need[s]
        tables[s, : need[s]] = ids
        for t in range(n):  # tokens past n (the tail of the last block) stay NaN: never read
            k_cache[ids[t // B], t % B] = torch.randn(kvh, hd, generator=g)
            v_cache[ids[t // B], t % B] = torch.randn(kvh, hd, generator=g)
    q = torch.randn(len(lens), kvh * group, hd, generator=g)
    scale = hd ** -0.5
    out = cpu_ops.paged_decode(q, k_cache, v_cache, tables, torch.tensor(lens), scale)
    assert out is not None and not torch.isnan(out).any()
    ref = reference(q, k_cache, v_cache, tables, torch.tensor(lens), scale)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


@needs_ops
def test_unsupported_inputs_return_none_for_the_torch_path():
    q, kc = torch.randn(1, 4, 8), torch.randn(2, 4, 2, 8)
    tables, lens = torch.tensor([[0, 1]]), torch.tensor([5])
    assert cpu_ops.paged_decode(q, kc, kc, tables, lens, 1.0) is not None
    assert cpu_ops.paged_decode(q.bfloat16(), kc.bfloat16(), kc.bfloat16(), tables, lens, 1.0) is None
    assert cpu_ops.paged_decode(q, kc.transpose(0, 1), kc.transpose(0, 1), tables, lens, 1.0) is None
    big = torch.randn(1, 2 * 33, 8), torch.randn(2, 4, 2, 8)  # 33 query heads per KV head > MAX_G
    assert cpu_ops.paged_decode(big[0], big[1], big[1], tables, lens, 1.0) is None


def test_disabled_or_unbuildable_ops_say_why(monkeypatch, tmp_path):
    monkeypatch.setenv("KVLAB_CACHE", str(tmp_path))
    try:
        monkeypatch.setenv("KVLAB_CPU_OPS", "0")
        cpu_ops.reset()
        assert cpu_ops.load() is None and "KVLAB_CPU_OPS=0" in cpu_ops.status()
        assert cpu_ops.paged_decode(torch.randn(1, 2, 8), torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8),
                                    torch.tensor([[0]]), torch.tensor([3]), 1.0) is None
        monkeypatch.setenv("KVLAB_CPU_OPS", "1")
        monkeypatch.setenv("CC", "false")  # a "compiler" that fails
        cpu_ops.reset()
        assert cpu_ops.load() is None and cpu_ops.status().startswith("build failed")
        from kvlab.kernels.cpu_backend import CpuBackend

        assert CpuBackend().native_ops is False  # the backend then takes its torch path
    finally:
        cpu_ops.reset()


@needs_ops
def test_loading_the_ops_leaves_subnormal_floats_alone():
    """The library is compiled with -ffast-math but not linked with it: GCC's crtfastmath would set
    flush-to-zero / denormals-are-zero for the whole process when the library loads."""
    import numpy as np

    assert cpu_ops.load() is not None
    tiny = np.float32(1e-39)  # a subnormal
    assert tiny * np.float32(1.0) != 0  # DAZ would read it as 0
    assert np.float32(1e-30) * np.float32(1e-9) != 0  # FTZ would flush the subnormal result
    t = torch.tensor([1e-39], dtype=torch.float32)
    assert (t * 1.0).item() != 0
