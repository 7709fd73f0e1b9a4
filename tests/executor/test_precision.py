"""dtype=auto / executor.gemm=auto decided from the CPU at run time (kvlab.executor.precision).

Every branch is exercised with faked CPU flags and a faked measurement, so each machine's branch
is tested on every machine; one test runs the real (short) measurement on this machine.
"""

from __future__ import annotations

import pytest
import torch

from kvlab.executor.precision import FAST_FP32_MARGIN, MARGIN, choose_precision, fp32_fast_paths, measure_linear

CPU = torch.device("cpu")
AMX = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
AVX2 = ("avx2", "fma")


def fake(times: dict[tuple[torch.dtype, str], float]):
    calls: list[tuple[torch.dtype, str]] = []

    def measure(dtype: torch.dtype, gemm: str) -> float:
        calls.append((dtype, gemm))
        return times[(dtype, gemm)]

    return measure, calls


def test_native_bf16_and_faster_picks_bf16():
    m, calls = fake({(torch.float32, "native"): 1.0, (torch.bfloat16, "native"): 0.5})
    c = choose_precision(CPU, flags=AMX, native_bf16=True, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "native")
    assert "native bf16 GEMM" in c.reason and "avx512_bf16" in c.reason and "0.50x" in c.reason
    assert calls == [(torch.float32, "native"), (torch.bfloat16, "native")]
    assert c.measured_ms == {"float32/native": 1000.0, "bfloat16/native": 500.0}
    assert c.as_dict()["dtype"] == "bfloat16" and c.as_dict()["native_bf16_gemm"] is True


def test_native_bf16_but_not_faster_keeps_fp32():
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.bfloat16, "native"): MARGIN + 0.05})
    c = choose_precision(CPU, flags=AMX, native_bf16=True, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "native")
    assert "fp32" in c.reason


@pytest.mark.parametrize("ratio, fast, want", [
    (0.75, "", torch.bfloat16),                    # past MARGIN, no fp32-only fast path: bf16
    (0.75, "the C decode op", torch.float32),      # the Zen 4 case: a 0.9x-class matmul win is not enough
    (FAST_FP32_MARGIN - 0.1, "the C decode op and the GGUF block matmuls", torch.bfloat16),  # AMX-class
])
def test_fp32_fast_paths_raise_the_bar_for_native_bf16(ratio, fast, want):
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.bfloat16, "native"): ratio})
    c = choose_precision(CPU, flags=AMX, native_bf16=True, packable=False, measure=m, fp32_fast_paths=fast)
    assert c.dtype == want
    bar = FAST_FP32_MARGIN if fast else MARGIN
    assert f"{ratio:.2f}x" in c.reason and f"< {bar}" in c.reason
    assert (fast in c.reason) if fast else "gives up" not in c.reason


def test_fp32_fast_paths_name_what_this_model_would_run(monkeypatch):
    from kvlab.kernels import cpu_ops

    gguf = {"checkpoint": "smollm2-gguf"}
    monkeypatch.setattr(cpu_ops, "load", lambda: object())  # built
    assert fp32_fast_paths(gguf, CPU, "auto", "auto") == "the C decode op and the GGUF block matmuls"
    assert fp32_fast_paths(gguf, CPU, "torch", "auto") == "the GGUF block matmuls"
    assert fp32_fast_paths(gguf, CPU, "auto", "off") == "the C decode op"
    assert fp32_fast_paths({"checkpoint": "random"}, CPU, "torch", "auto") == ""
    assert fp32_fast_paths(gguf, torch.device("cuda"), "auto", "auto") == ""
    monkeypatch.setattr(cpu_ops, "load", lambda: None)  # no C compiler, or KVLAB_CPU_OPS=0
    assert fp32_fast_paths(gguf, CPU, "auto", "auto") == ""


def test_avx2_auto_is_fp32_without_measuring_the_upcast_path():
    m, calls = fake({(torch.float32, "native"): 1.0})
    c = choose_precision(CPU, flags=AVX2, native_bf16=False, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "native") and "end to end" in c.reason
    assert calls == [(torch.float32, "native")]


def test_avx2_upcast_asked_for_and_faster_picks_bf16_upcast():
    m, calls = fake({(torch.float32, "native"): 1.0, (torch.bfloat16, "upcast"): 0.6})
    c = choose_precision(CPU, gemm="upcast", flags=AVX2, native_bf16=False, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "upcast")
    assert "no native bf16 GEMM" in c.reason
    assert (torch.bfloat16, "native") not in calls  # the 5x-slower per-row path is never a candidate


def test_avx2_upcast_asked_for_but_slower_picks_fp32():
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.bfloat16, "upcast"): 1.3})
    c = choose_precision(CPU, gemm="upcast", flags=AVX2, native_bf16=False, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "native")
    assert "1.30x" in c.reason


def test_avx2_gemm_native_rules_out_upcast_without_measuring_it():
    m, calls = fake({(torch.float32, "native"): 1.0})
    c = choose_precision(CPU, gemm="native", flags=AVX2, native_bf16=False, packable=False, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "native") and "gemm=native" in c.reason
    assert calls == [(torch.float32, "native")]


def test_explicit_dtype_is_never_overridden_and_not_measured():
    def boom(dtype, gemm):
        raise AssertionError("explicit dtype must not be measured")

    assert choose_precision(CPU, "float32", flags=AMX, native_bf16=True, packable=False,
                            measure=boom).dtype == torch.float32
    c = choose_precision(CPU, "bfloat16", flags=AVX2, native_bf16=False, measure=boom)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "upcast")
    c = choose_precision(CPU, "bfloat16", flags=AMX, native_bf16=True, measure=boom)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "native")
    c = choose_precision(CPU, "bfloat16", "native", flags=AVX2, native_bf16=False, measure=boom)
    assert c.gemm == "native"


def test_packed_fp32_faster_is_taken_and_is_the_time_bf16_must_beat():
    # gemm=upcast asked for: fp32 is not packed, so upcast (0.6x native) wins
    m, calls = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 0.5,
                     (torch.bfloat16, "upcast"): 0.6})
    c = choose_precision(CPU, gemm="upcast", flags=AVX2, native_bf16=False, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "upcast") and "0.60x fp32's time" in c.reason
    c = choose_precision(CPU, flags=AVX2, native_bf16=False, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "packed") and "prepacked" in c.reason
    assert c.measured_ms == {"float32/native": 1000.0, "float32/packed": 500.0}
    # a native bf16 GEMM must beat the packed fp32 time, not the native one
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 0.5, (torch.bfloat16, "native"): 0.3})
    c = choose_precision(CPU, flags=AMX, native_bf16=True, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "native") and "0.60x fp32's time" in c.reason
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 0.5, (torch.bfloat16, "native"): 0.6})
    c = choose_precision(CPU, flags=AMX, native_bf16=True, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "packed") and "1.20x fp32's time" in c.reason


def test_packed_not_faster_keeps_native_fp32():
    m, _ = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 0.95})
    c = choose_precision(CPU, flags=AVX2, native_bf16=False, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "native") and "0.95x native's time (not < 0.9)" in c.reason


def test_explicit_fp32_measures_only_the_fp32_paths():
    m, calls = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 0.4})
    c = choose_precision(CPU, "float32", flags=AVX2, native_bf16=False, packable=True, measure=m)
    assert (c.dtype, c.gemm) == (torch.float32, "packed") and "dtype set explicitly" in c.reason
    assert calls == [(torch.float32, "native"), (torch.float32, "packed")]
    m, calls = fake({(torch.float32, "native"): 1.0, (torch.float32, "packed"): 2.0})
    c = choose_precision(CPU, "float32", "packed", flags=AVX2, native_bf16=False, packable=True, measure=m)
    assert c.gemm == "packed" and "set explicitly" in c.reason  # forced, even where slower
    c = choose_precision(CPU, "float32", "native", flags=AVX2, native_bf16=False, packable=True,
                         measure=lambda d, g: 1 / 0)
    assert c.gemm == "native"


def test_packed_is_fp32_only():
    c = choose_precision(CPU, "bfloat16", "packed", flags=AVX2, native_bf16=False, packable=True,
                         measure=lambda d, g: 1 / 0)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "native") and "fp32-only" in c.reason


def test_cuda_auto_is_bf16_without_measuring():
    c = choose_precision(torch.device("cuda"), measure=lambda d, g: 1 / 0)
    assert (c.dtype, c.gemm) == (torch.bfloat16, "native")


@pytest.mark.parametrize("key,value", [("dtype", "fp8"), ("gemm", "fast")])
def test_bad_values_name_key_and_choices(key, value):
    with pytest.raises(ValueError, match="choose one of"):
        choose_precision(CPU, **{key: value}, flags=AVX2, native_bf16=False, measure=lambda d, g: 1.0)


def test_real_measurement_on_this_machine_returns_positive_times():
    m = measure_linear(64, 128, reps=1, weight_mib=1)
    assert m(torch.float32, "native") > 0 and m(torch.bfloat16, "upcast") > 0 and m(torch.float32, "packed") > 0
    c = choose_precision(CPU, hidden=64, ffn=128)
    assert c.dtype in (torch.float32, torch.bfloat16) and set(c.measured_ms) >= {"float32/native"}
    assert choose_precision(CPU, hidden=64, ffn=128) is c  # measured once per process and shape
