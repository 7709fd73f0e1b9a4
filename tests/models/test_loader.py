"""Loader and config resolution: errors, HF directories (incl. Qwen2 qkv bias, llama3 RoPE),
random weights, and the GGUF cache directory's tokenizer and chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kvlab.executor.torch_runner import TorchExecutor
from kvlab.kernels import build_metadata
from kvlab.models.config import resolve_model
from kvlab.models.loader import checkpoint_dir, load_model


def test_unknown_model_name_lists_choices():
    with pytest.raises(ValueError, match="smollm2-135m"):
        resolve_model("no-such-model")


def test_missing_path_is_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_unsupported_architecture(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "opt"}))
    with pytest.raises(ValueError, match="llama"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="simulator"):
        load_model(resolve_model("opt-13b") | {"checkpoint": "random"})


def test_no_checkpoint_and_bad_checkpoint():
    with pytest.raises(ValueError, match="random"):
        checkpoint_dir(resolve_model("opt-13b"))
    with pytest.raises(FileNotFoundError, match="smollm2-gguf"):
        checkpoint_dir({"name": "x", "checkpoint": "/definitely/not/here"})


def test_gguf_cache_dir_has_tokenizer_and_chat_template(smol_dir: Path, executor: TorchExecutor):
    assert (smol_dir / "model.safetensors").is_file() and (smol_dir / "config.json").is_file()
    # a complete Hugging Face directory: its config names the architecture (llama.cpp's converter
    # and transformers' Auto classes dispatch on it)
    assert json.loads((smol_dir / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    cfg = resolve_model(str(smol_dir))
    assert cfg["num_layers"] == 30 and cfg["num_kv_heads"] == 3 and cfg["checkpoint"] == str(smol_dir)
    text = executor.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                  add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert executor.eos_token_id == executor.tokenizer.eos_token_id == 2


def test_random_weights_are_seeded_and_run():
    cfg = resolve_model("smollm2-135m") | {"checkpoint": "random", "num_layers": 2, "vocab_size": 256}
    a = load_model(cfg, seed=1).weights["0.qkv"]
    assert torch.equal(a, load_model(cfg, seed=1).weights["0.qkv"])
    assert not torch.equal(a, load_model(cfg, seed=2).weights["0.qkv"])
    ex = TorchExecutor(cfg, device="cpu", num_threads=1)
    assert ex.tokenizer is None and ex.eos_token_id is None
    ex.init_cache(ex.kv_capacity_blocks(16) and 8, 0, 16)
    meta = build_metadata([(0, 5, [3, 1])], 0, 16, torch.device("cpu"))
    with torch.inference_mode():
        out = ex.model.forward(torch.arange(5), torch.arange(5), ex.kv_cache, meta)
    assert out.shape == (5, 256) and torch.isfinite(out).all()


def tiny_hf_checkpoint(tmp_path: Path, kind: str) -> Path:
    """Save a tiny random transformers model (qwen2 with qkv bias, or llama with llama3 RoPE)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if kind == "qwen2":
        config = Qwen2Config(**shape, tie_word_embeddings=False)
    else:
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
        config = LlamaConfig(**shape, rope_parameters=rope)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    if kind == "qwen2":  # random biases: zero-init would not test them
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    model.save_pretrained(tmp_path / kind)
    return tmp_path / kind


@pytest.mark.parametrize("kind", ["qwen2", "llama3-rope"])
def test_hf_directory_matches_transformers(tmp_path: Path, kind: str):
    from transformers import AutoModelForCausalLM

    path = tiny_hf_checkpoint(tmp_path, kind)
    cfg = resolve_model(str(path))
    loaded = load_model(cfg)
    assert loaded.arch.qkv_bias == (kind == "qwen2")
    assert (loaded.arch.rope_scaling is not None) == (kind != "qwen2")
    ex = TorchExecutor(cfg, device="cpu", dtype="float32", num_threads=1)  # fp32 like the reference
    ex.init_cache(16, 0, 16)
    ids = torch.randint(0, 128, (100,), generator=torch.Generator().manual_seed(0))
    meta = build_metadata([(0, 100, [9, 3, 12, 0, 5, 7, 1])], 0, 16, torch.device("cpu"))
    with torch.inference_mode():
        ours = ex.model.forward(ids, torch.arange(100), ex.kv_cache, meta)
        ref = AutoModelForCausalLM.from_pretrained(path).eval()(ids[None]).logits[0]
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
