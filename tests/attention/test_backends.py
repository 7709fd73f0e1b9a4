"""The attention-backend seam: lazy registry, auto resolution, per-step metadata, torch vs Triton.

The Triton backend runs under ``TRITON_INTERPRET=1`` on a CPU (set by tests/conftest.py), on tiny
shapes: a batch mixing decodes, a prefix-hit chunk and a fresh prefill over shuffled block tables.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch

from kvlab.kernels import KVCache, KVSpec, get_backend, resolve_backend_name
from tests.attention.helpers import run_backend

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


def run_py(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_import_kvlab_and_torch_backend_work_without_triton():
    # triton made unimportable: kvlab, kvlab.kernels and the torch backend must not need it
    code = ("import sys; sys.modules['triton'] = None\n"
            "import kvlab, kvlab.kernels, kvlab.executor.torch_runner\n"
            "from kvlab.kernels import get_backend\n"
            "assert get_backend('torch').name == 'torch'\n"
            "try:\n    get_backend('triton', 'cuda')\nexcept RuntimeError as e:\n    print('ERR', e)\n")
    res = run_py(code)
    assert res.returncode == 0, res.stderr
    assert "ERR executor.attention_backend='triton' cannot be imported" in res.stdout


def test_triton_on_a_cpu_without_the_interpreter_is_a_clear_error():
    res = run_py("from kvlab.kernels import get_backend\nget_backend('triton', 'cpu')")
    assert res.returncode != 0 and "TRITON_INTERPRET=1" in res.stderr and "attention_backend=torch" in res.stderr


def test_auto_resolution_and_unknown_names():
    assert resolve_backend_name("auto", "cpu") == "cpu"
    assert resolve_backend_name("auto", "cuda") == "triton"
    with pytest.raises(ValueError, match="executor.attention_backend=.flash.*auto, torch, triton, cpu"):
        resolve_backend_name("flash", "cpu")


SPANS = [  # (start_pos, num_new_tokens, block_table): prefill, decode, prefix-hit chunk, decode
    (0, 7, None), (12, 1, None), (8, 5, None), (2, 1, None),
]


def mixed_batch(block_size: int, seed: int = 0) -> list[tuple[int, int, list[int]]]:
    rng = random.Random(seed)
    need = [(s + n + block_size - 1) // block_size for s, n, _ in SPANS]
    ids = list(range(sum(need) + 3))
    rng.shuffle(ids)
    out, pos = [], 0
    for (s, n, _), k in zip(SPANS, need):
        out.append((s, n, ids[pos:pos + k] + [ids[-1]]))  # one spare block past the context
        pos += k
    return out


def test_torch_metadata_puts_decodes_first():
    meta = get_backend("torch").build_metadata(mixed_batch(4), 4, torch.device("cpu"))
    assert meta.order == [1, 3, 0, 2] and meta.num_decodes == 2
    assert [c.num_tokens for c in meta.chunks] == [7, 5] and meta.slot_mapping.numel() == 14


@pytest.mark.skipif(not INTERPRETED, reason="Triton needs CUDA or TRITON_INTERPRET=1")
def test_triton_metadata_is_int32_once_per_step():
    seqs = mixed_batch(4)
    meta = get_backend("triton").build_metadata(seqs, 4, torch.device("cpu"))
    assert meta.order == [1, 3, 0, 2]
    assert meta.decode_seq_lens.tolist() == [13, 3] and meta.decode_seq_lens.dtype == torch.int32
    assert meta.query_start_loc.tolist() == [0, 7, 12] and meta.prefill_seq_lens.tolist() == [7, 13]
    assert meta.decode_block_tables.dtype == meta.prefill_block_tables.dtype == torch.int32
    assert meta.decode_block_tables[0].tolist() == seqs[1][2][:4]
    assert meta.prefill_block_tables.shape == (2, 4) and meta.prefill_block_tables[0, 2:].tolist() == [0, 0]


@pytest.mark.skipif(not INTERPRETED, reason="Triton needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("block_size,group,dtype", [(4, 3, torch.float32), (1, 1, torch.float32),
                                                    (16, 8, torch.float32), (4, 3, torch.float16)])
def test_triton_backend_equals_torch_backend(block_size, group, dtype):
    seqs = mixed_batch(block_size, seed=block_size)
    ref, ref_cache, ref_meta = run_backend("torch", seqs, block_size, group, dtype)
    out, cache, meta = run_backend("triton", seqs, block_size, group, dtype)
    assert ref_meta.order == meta.order == [1, 3, 0, 2]
    tol = {"atol": 2e-3, "rtol": 2e-3} if dtype == torch.float16 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(cache, ref_cache, atol=0, rtol=0)
    torch.testing.assert_close(out, ref, **tol)


@pytest.mark.skipif(not INTERPRETED, reason="Triton needs CUDA or TRITON_INTERPRET=1")
def test_kv_cache_copy_with_the_triton_kernel_moves_data_and_metadata():
    from kvlab.kernels import BlockMetadata

    spec = KVSpec(2, 2, 8, 4, torch.float32, (BlockMetadata("scale", (4, 2), torch.float16),))
    caches = []
    for copy_fn in (None, get_backend("triton").copy_blocks):
        cache = KVCache(spec, 6, copy_fn=copy_fn)
        cache.data.copy_(torch.randn(cache.data.shape, generator=torch.Generator().manual_seed(0)))
        cache.metadata["scale"].copy_(torch.rand(cache.metadata["scale"].shape,
                                                 generator=torch.Generator().manual_seed(1)))
        cache.copy_blocks([(1, 4), (3, 0)])
        caches.append(cache)
    assert torch.equal(caches[0].data, caches[1].data)
    assert torch.equal(caches[0].metadata["scale"], caches[1].metadata["scale"])
    assert torch.equal(caches[1].data[:, :, 4], caches[1].data[:, :, 1])
