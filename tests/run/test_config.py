"""One way to read the config (kvlab.config): one conversion, one set of defaults, one precedence,
errors that name the key — and the executors' build functions read it that way."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from kvlab.config import DEFAULT_CPU_KV_GIB, DEFAULT_SWAP_SPACE_GIB, KVConfig, to_plain


def test_to_plain_resolves_and_copies() -> None:
    d = OmegaConf.create({"a": {"b": 3}, "c": "${a.b}"})
    assert to_plain(d) == {"a": {"b": 3}, "c": 3}
    src = {"x": {"y": [1, 2]}}
    out = to_plain(src)
    out["x"]["y"].append(3)
    assert src == {"x": {"y": [1, 2]}}


def test_defaults_are_the_same_everywhere() -> None:
    kv = KVConfig.from_config({})
    assert kv.swap_space_gib == DEFAULT_SWAP_SPACE_GIB == 0.0
    assert kv.cpu_kv_gib == DEFAULT_CPU_KV_GIB and kv.kv_cache_gib is None and kv.max_model_len is None


def test_kv_wins_over_the_executor_group_for_both_budgets() -> None:
    cfg = {"kv": {"kv_cache_gib": 1.0, "cpu_kv_gib": 0.5}, "executor": {"kv_cache_gib": 3.0, "cpu_kv_gib": 2.0}}
    kv = KVConfig.from_config(cfg)
    assert (kv.kv_cache_gib, kv.cpu_kv_gib) == (1.0, 0.5)
    kv = KVConfig.from_config({"kv": {"kv_cache_gib": None}, "executor": {"kv_cache_gib": 3.0, "cpu_kv_gib": 2.0}})
    assert (kv.kv_cache_gib, kv.cpu_kv_gib) == (3.0, 2.0)


@pytest.mark.parametrize("key, value, match", [
    ("swap_space_gib", -1, "kv.swap_space_gib"),
    ("gpu_memory_utilization", 1.5, "kv.gpu_memory_utilization"),
    ("gpu_memory_utilization", 0, "kv.gpu_memory_utilization"),
    ("max_model_len", "long", "kv.max_model_len"),
    ("cpu_kv_gib", 0, "kv.cpu_kv_gib"),
    ("kv_cache_gib", True, "kv.kv_cache_gib"),
])
def test_bad_values_name_the_key(key: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KVConfig.from_config({"kv": {key: value}})


def test_an_executor_fallback_error_names_the_executor_key() -> None:
    with pytest.raises(ValueError, match="executor.cpu_kv_gib"):
        KVConfig.from_config({"executor": {"cpu_kv_gib": -2}})


def test_sim_executor_uses_the_shared_parse() -> None:
    from kvlab.executor.sim import build_sim_executor
    from kvlab.llm import CONF_DIR

    model = to_plain(OmegaConf.load(CONF_DIR / "model" / "opt-13b.yaml"))
    hw = to_plain(OmegaConf.load(CONF_DIR / "hardware" / "a100-40gb.yaml"))
    ex = build_sim_executor({"model": model, "hardware": hw, "executor": {"name": "sim"}})
    assert ex.swap_space_gib == DEFAULT_SWAP_SPACE_GIB  # was 4.0 here and 0.0 in the engine
    ex = build_sim_executor({"model": model, "hardware": hw, "kv": {"swap_space_gib": 2.5}})
    assert ex.swap_space_gib == 2.5
    with pytest.raises(ValueError, match="kv.swap_space_gib"):
        build_sim_executor({"model": model, "hardware": hw, "kv": {"swap_space_gib": -1}})
    with pytest.raises(ValueError, match="'hardware'"):
        build_sim_executor({"model": model})


def test_torch_options_are_typed_and_bad_values_name_key_and_choices():
    from kvlab.config import TorchOptions
    from kvlab.config_check import check_config

    opt = TorchOptions.from_config({"device": "cuda:1", "dtype": "bfloat16", "seed": 3,
                                    "executor": {"name": "torch", "attention_backend": "triton", "num_threads": 2}})
    assert opt == TorchOptions(device="cuda:1", dtype="bfloat16", attention_backend="triton", gemm="auto",
                               num_threads=2, seed=3)
    assert TorchOptions.from_config({}) == TorchOptions()
    assert TorchOptions.from_config({"executor": {"weight_blocks": 8}}).weight_blocks == 8
    assert TorchOptions.from_config({"executor": {"weight_blocks": "off"}}).weight_blocks == "off"
    for cfg, msg in [({"dtype": "fp8"}, "dtype='fp8' is unknown; choose one of: auto, float32, bfloat16, float16"),
                     ({"device": "tpu"}, "device='tpu' is unknown"),
                     ({"executor": {"attention_backend": "flash"}}, "executor.attention_backend='flash' is unknown; "
                      "choose one of: auto, torch, triton"),
                     ({"executor": {"gemm": "fast"}}, "executor.gemm='fast' is unknown"),
                     ({"executor": {"weight_blocks": "q4"}}, "executor.weight_blocks='q4' is unknown; choose one of: "
                      "auto, off, or a number of rows"),
                     ({"executor": {"weight_blocks": -1}}, "executor.weight_blocks=-1 is unknown"),
                     ({"executor": {"num_threads": 0}}, "executor.num_threads=0")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            TorchOptions.from_config(cfg)
    base = {"executor": {"name": "torch", "attention_backend": "flash"}, "allocator": {"name": "paged"},
            "scheduler": {"name": "fcfs"}, "model": {"max_model_len": 64}}
    with pytest.raises(ValueError, match="executor.attention_backend='flash'"):  # before any model load
        check_config(base)
    check_config({**base, "executor": {"name": "sim", "attention_backend": "flash"}})  # the simulator ignores it
