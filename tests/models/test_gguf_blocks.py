"""The checkpoint's GGUF blocks (kvlab.models.gguf_blocks) and the block matmul (cpu_ops.qgemm).

The mapping is held to the fp32 weights bit for bit (same names, fusing and RoPE row order as the
fp32 loader); the kernel to the fp32 product of the dequantized matrix, on drawn shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.kernels import cpu_ops
from kvlab.models.gguf_blocks import BYTES_PER_BLOCK, BlockWeight, dequantize, load_gguf_blocks
from kvlab.models.loader import gguf_path, load_model

CPU = torch.device("cpu")
needs_ops = pytest.mark.skipif(cpu_ops.load() is None, reason=f"kvlab CPU ops: {cpu_ops.status()}")


@pytest.fixture(scope="module")
def blocks_and_weights(smol_cfg):
    loaded = load_model(smol_cfg, CPU, torch.float32, 0)
    return load_gguf_blocks(gguf_path(smol_cfg["checkpoint"]), loaded.arch), loaded


def test_blocks_dequantize_to_exactly_the_fp32_weights(blocks_and_weights):
    blocks, loaded = blocks_and_weights
    a = loaded.arch
    names = [f"{i}.{k}" for i in range(a.num_layers) for k in ("qkv", "o", "gate_up", "down")] + ["lm_head"]
    assert sorted(blocks) == sorted(names)
    assert {blocks[n].fmt for n in names} == {"Q4_1", "Q8_0"} and blocks["lm_head"].fmt == "Q8_0"
    for n in ("0.qkv", "0.gate_up", f"{a.num_layers - 1}.o", "7.down", "lm_head"):
        assert torch.equal(dequantize(blocks[n]), loaded.weights[n]), n
    total = sum(b.nbytes for b in blocks.values())
    dense = sum(loaded.weights[n].numel() * 4 for n in names)
    assert total < dense / 5  # ~96 MB of blocks for ~540 MB of fp32


def random_blocks(fmt: str, rows: int, cols: int, gen: torch.Generator) -> BlockWeight:
    nb = cols // 32
    raw = torch.randint(0, 256, (rows, nb, BYTES_PER_BLOCK[fmt]), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(rows, nb, 2 if fmt == "Q4_1" else 1, generator=gen) * 0.1 - 0.05).half()
    raw[..., : scales.shape[-1] * 2] = scales.view(torch.uint8).view(rows, nb, -1)
    return BlockWeight(fmt, raw.reshape(rows, -1).contiguous(), rows, cols)


@needs_ops
@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(["Q4_1", "Q8_0"]), m=st.integers(0, 21), rows=st.integers(1, 70),
       nblocks=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_qgemm_equals_the_fp32_product_of_the_dequantized_matrix(fmt, m, rows, nblocks, seed):
    gen = torch.Generator().manual_seed(seed)
    w = random_blocks(fmt, rows, 32 * nblocks, gen)
    x = torch.randn(m, w.cols, generator=gen)
    y = cpu_ops.qgemm(x, w.fmt, w.data, w.rows, w.cols)
    assert y is not None and y.shape == (m, rows)
    ref = x.double() @ dequantize(w).double().T
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)


@needs_ops
def test_qgemm_refuses_what_it_cannot_run():
    gen = torch.Generator().manual_seed(0)
    w = random_blocks("Q4_1", 4, 64, gen)
    x = torch.randn(2, 64)
    assert cpu_ops.qgemm(x, "Q4_1", w.data, 4, 64) is not None
    assert cpu_ops.qgemm(x.double(), "Q4_1", w.data, 4, 64) is None  # fp32 only
    assert cpu_ops.qgemm(x, "Q5_K", w.data, 4, 64) is None  # unknown format
    assert cpu_ops.qgemm(x, "Q8_0", w.data, 4, 64) is None  # bytes do not match the format
    assert cpu_ops.qgemm(x[:, :48], "Q4_1", w.data, 4, 48) is None  # not whole blocks


def test_block_linear_routes_by_rows_and_plan_says_why(blocks_and_weights, smol_cfg, monkeypatch):
    import torch.nn.functional as F

    from kvlab.models import block_linear
    from kvlab.models.block_linear import BlockBacked, BlockLinear, plan_weight_blocks

    blocks, loaded = blocks_and_weights
    calls: list[str] = []
    monkeypatch.setattr(block_linear.cpu_ops, "qgemm", lambda x, *a: calls.append("block") or x @ x.new_zeros(
        x.shape[1], a[2]))
    lin = BlockLinear(lambda x, w, b=None: calls.append("dense") or F.linear(x, w, b), max_rows=4)
    w = lin.attach(loaded.weights["0.o"], blocks["0.o"])
    assert isinstance(w, BlockBacked) and lin.attach(loaded.weights["0.o"], blocks["0.qkv"]) is not w
    lin(torch.randn(4, 576), w)
    lin(torch.randn(5, 576), w)
    lin(torch.randn(2, 576), loaded.weights["0.o"])  # a weight without blocks
    assert calls == ["block", "dense", "dense"]
    monkeypatch.undo()

    arch, weights, cpu = loaded.arch, loaded.weights, torch.device("cpu")
    dense = F.linear
    assert plan_weight_blocks("off", smol_cfg, arch, weights, dense, cpu, torch.float32)[2].startswith("off")
    assert "fp32 on a CPU" in plan_weight_blocks("auto", smol_cfg, arch, weights, dense, cpu, torch.bfloat16)[2]
    rnd = dict(smol_cfg, checkpoint="random")
    assert "not a GGUF" in plan_weight_blocks("auto", rnd, arch, weights, dense, cpu, torch.float32)[2]
    if cpu_ops.load() is not None:
        lin, got, why = plan_weight_blocks(3, smol_cfg, arch, weights, dense, cpu, torch.float32)
        assert isinstance(lin, BlockLinear) and lin.max_rows == 3 and got is not None and "set explicitly" in why
    monkeypatch.setattr(block_linear.cpu_ops, "load", lambda: None)
    monkeypatch.setattr(block_linear.cpu_ops, "status", lambda: "disabled for the test")
    assert "disabled for the test" in plan_weight_blocks("auto", smol_cfg, arch, weights, dense, cpu,
                                                         torch.float32)[2]


@needs_ops
def test_portable_build_without_avx2_gives_the_same_results(monkeypatch, tmp_path):
    """The scalar paths (what a CPU without AVX2/FMA/F16C runs) against the reference too."""
    from tests.attention.test_cpu_ops import reference

    monkeypatch.setenv("KVLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("KVLAB_CPU_OPS_MARCH", "x86-64")
    cpu_ops.reset()
    try:
        assert cpu_ops.load() is not None, cpu_ops.status()
        gen = torch.Generator().manual_seed(7)
        for fmt in ("Q4_1", "Q8_0"):
            w = random_blocks(fmt, 37, 96, gen)
            x = torch.randn(11, 96, generator=gen)
            y = cpu_ops.qgemm(x, w.fmt, w.data, w.rows, w.cols)
            torch.testing.assert_close(y.double(), x.double() @ dequantize(w).double().T, atol=1e-4, rtol=1e-4)
        kc, vc = torch.randn(6, 4, 2, 16, generator=gen), torch.randn(6, 4, 2, 16, generator=gen)
        q, tables, lens = torch.randn(3, 6, 16, generator=gen), torch.tensor([[5, 0], [1, 2], [3, 4]]), \
            torch.tensor([7, 2, 8])
        out = cpu_ops.paged_decode(q, kc, vc, tables, lens, 0.25)
        torch.testing.assert_close(out.double(), reference(q, kc, vc, tables, lens, 0.25), atol=1e-5, rtol=1e-4)
    finally:
        monkeypatch.undo()
        cpu_ops.reset()
