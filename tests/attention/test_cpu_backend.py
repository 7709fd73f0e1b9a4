"""The CPU attention backend (kvlab.kernels.cpu_backend) against the torch reference backend."""

from __future__ import annotations

import pytest
import torch

from kvlab.kernels import BlockMetadata, KVCache, KVSpec, cpu_ops, get_backend
from kvlab.kernels.cpu_backend import CpuAttentionMetadata, CpuBackend
from tests.attention.helpers import run_backend

CPU = torch.device("cpu")


def run(name: str, seqs, block_size: int, group: int, dtype: torch.dtype, meta_spec=(), native_ops=None):
    """:func:`run_backend`, with the CPU backend's C ops forced on or off where ``native_ops`` is set."""
    backend = CpuBackend(native_ops) if name == "cpu" and native_ops is not None else None
    return run_backend(name, seqs, block_size, group, dtype, meta_spec, backend=backend)


needs_ops = pytest.mark.skipif(cpu_ops.load() is None, reason=f"kvlab CPU ops: {cpu_ops.status()}")

BATCHES = {  # (start_pos, num_new_tokens, block_table)
    "mixed": [(0, 7, [5, 2]), (12, 1, [7, 0, 9, 3]), (8, 5, [1, 8, 11, 4]), (2, 1, [6, 10])],
    "decodes_uneven": [(12, 1, [7, 0, 9, 3]), (2, 1, [6, 10]), (5, 1, [1, 2])],
    "decodes_even": [(7, 1, [3, 1]), (7, 1, [0, 2])],  # 8 tokens each = two full blocks: no padding
    "one_decode_run": [(9, 1, [4, 5, 6])],  # consecutive blocks: read as a slice
    "one_decode_scattered": [(9, 1, [6, 2, 4])],
    "prefill_only": [(0, 6, [3, 0]), (4, 3, [1, 2])],
}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("block_size,group,dtype", [(4, 3, torch.float32), (1, 1, torch.float32),
                                                    (4, 2, torch.bfloat16)])
@pytest.mark.parametrize("native_ops", [False, pytest.param(True, marks=needs_ops)], ids=["torch-path", "c-op"])
def test_cpu_backend_equals_torch_backend(batch, block_size, group, dtype, native_ops):
    seqs = BATCHES[batch]
    if block_size == 1:  # one token per block: block tables as long as the context
        seqs = [(s, n, list(range(i * 32, i * 32 + s + n))) for i, (s, n, _) in enumerate(seqs)]
    ref, ref_cache, ref_meta = run("torch", seqs, block_size, group, dtype)
    out, cache, meta = run("cpu", seqs, block_size, group, dtype, native_ops=native_ops)
    assert meta.order == ref_meta.order
    tol = {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(cache, ref_cache, atol=0, rtol=0)
    torch.testing.assert_close(out, ref, **tol)


def test_metadata_is_built_once_per_step():
    _, _, meta = run("cpu", BATCHES["mixed"], 4, 3, torch.float32)
    assert isinstance(meta, CpuAttentionMetadata) and meta.num_decodes == 2
    assert meta.decode_bias is not None and meta.decode_bias.shape == (2, 1, 1, 16)
    assert torch.isinf(meta.decode_bias[1, 0, 0, 3:]).all() and (meta.decode_bias[1, 0, 0, :3] == 0).all()
    assert meta.chunks_only is not None and meta.chunks_only.num_decodes == 0
    _, _, one = run("cpu", BATCHES["one_decode_run"], 4, 3, torch.float32)
    assert one.decode_run_start == 4 and one.decode_single_len == 10 and one.decode_bias is None
    _, _, scattered = run("cpu", BATCHES["one_decode_scattered"], 4, 3, torch.float32)
    assert scattered.decode_run_start is None
    _, _, even = run("cpu", BATCHES["decodes_even"], 4, 3, torch.float32)
    assert even.decode_bias is None


def test_layer_with_block_metadata_takes_the_reference_path(monkeypatch):
    from kvlab.kernels import cpu_backend

    calls = []
    monkeypatch.setattr(cpu_backend, "decode_attention", lambda *a: calls.append(a))
    monkeypatch.setattr(cpu_ops, "paged_decode", lambda *a: calls.append(a))
    scale = (BlockMetadata("scale", (4, 2), torch.float32),)
    ref, _, _ = run("torch", BATCHES["mixed"], 4, 3, torch.float32, scale)
    out, _, _ = run("cpu", BATCHES["mixed"], 4, 3, torch.float32, scale)
    assert calls == [] and torch.equal(out, ref)


def test_generic_metadata_takes_the_reference_path():
    from kvlab.kernels import build_metadata

    seqs = BATCHES["decodes_uneven"]
    ref, _, _ = run("torch", seqs, 4, 3, torch.float32)
    backend = get_backend("cpu")
    spec = KVSpec(1, 2, 16, 4, torch.float32)
    cache = KVCache(spec, 11)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 6, 16, generator=gen)
    k, v = torch.randn(3, 2, 16, generator=gen), torch.randn(3, 2, 16, generator=gen)
    cache.data.copy_(torch.randn(spec.data_shape(11), generator=gen))
    meta = build_metadata(seqs, 3, 4, CPU)  # the generic builder: already decodes-first
    backend.write_kv(cache.layers[0], k, v, meta)
    torch.testing.assert_close(backend.forward(cache.layers[0], q, meta, 0.25), ref, atol=1e-5, rtol=1e-5)
