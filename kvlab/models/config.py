"""Model configs: resolve a model name or checkpoint path, and the architecture a forward needs.

Two shapes of config live here:

* the *model config* mapping of ``conf/model/<name>.yaml`` (name, arch, num_layers, hidden_size,
  num_heads, num_kv_heads, head_dim, ffn_size, vocab_size, max_model_len, num_params,
  dtype_bytes, tensor_parallel, checkpoint), shared with the simulator; :func:`resolve_model`
  returns one for a named model or for a local Hugging Face checkpoint directory;
* :class:`ArchConfig`, the exact numerics of a Llama-family forward (RoPE theta and scaling,
  RMSNorm epsilon, tied embeddings, qkv bias), read from a checkpoint's ``config.json`` or, for
  random weights, from the model config with Llama defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONF_MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
# Hugging Face `model_type`s whose forward is the Llama one (Qwen2 adds a qkv bias).
LLAMA_FAMILY = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}


def model_names() -> list[str]:
    """Names of the model configs in ``conf/model/`` (the YAML stems)."""
    return sorted(p.stem for p in CONF_MODEL_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class ArchConfig:
    """What a Llama-family forward needs beyond the shape. Immutable."""

    arch: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    max_model_len: int
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> ArchConfig:
        """Build from a Hugging Face ``config.json`` dict; ``ValueError`` for other architectures."""
        model_type = hf.get("model_type", "?")
        if model_type not in LLAMA_FAMILY:
            raise ValueError(
                f"unsupported architecture {model_type!r}; kvlab's torch forward supports the "
                f"Llama family: {', '.join(sorted(LLAMA_FAMILY))}"
            )
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", None) or hf.get("rope_theta", 10000.0)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        heads = hf["num_attention_heads"]
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        return cls(
            arch=LLAMA_FAMILY[model_type],
            num_layers=hf["num_hidden_layers"],
            hidden_size=hf["hidden_size"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            ffn_size=hf["intermediate_size"],
            vocab_size=hf["vocab_size"],
            max_model_len=hf.get("max_position_embeddings", 2048),
            rope_theta=float(theta),
            rope_scaling=None if rope_type == "default" else rope,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_model_cfg(cls, cfg: Mapping[str, Any]) -> ArchConfig:
        """Build from a kvlab model config (random weights); optional keys override Llama defaults."""
        if cfg.get("arch") not in LLAMA_FAMILY:
            raise ValueError(
                f"model {cfg.get('name')!r} has arch {cfg.get('arch')!r}; the torch executor runs "
                f"only {', '.join(sorted(LLAMA_FAMILY))} (others are simulator shapes)"
            )
        return cls(
            arch=cfg["arch"],
            num_layers=int(cfg["num_layers"]),
            hidden_size=int(cfg["hidden_size"]),
            num_heads=int(cfg["num_heads"]),
            num_kv_heads=int(cfg["num_kv_heads"]),
            head_dim=int(cfg["head_dim"]),
            ffn_size=int(cfg["ffn_size"]),
            vocab_size=int(cfg["vocab_size"]),
            max_model_len=int(cfg["max_model_len"]),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bool(cfg.get("qkv_bias", cfg["arch"] == "qwen2")),
        )


def model_cfg_from_hf_dir(path: Path) -> dict[str, Any]:
    """A kvlab model config for a local Hugging Face checkpoint directory (reads config.json)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint: no config.json in it")
    hf = json.loads(cfg_file.read_text())
    arch = ArchConfig.from_hf_config(hf)
    h, f, v, kvh, d = arch.hidden_size, arch.ffn_size, arch.vocab_size, arch.num_kv_heads, arch.head_dim
    per_layer = h * (arch.num_heads * d) * 2 + h * kvh * d * 2 + 3 * h * f + 2 * h
    num_params = arch.num_layers * per_layer + v * h * (1 if arch.tie_word_embeddings else 2) + h
    return {
        "name": path.name, "arch": arch.arch, "num_layers": arch.num_layers,
        "hidden_size": h, "num_heads": arch.num_heads, "num_kv_heads": kvh, "head_dim": d,
        "ffn_size": f, "vocab_size": v, "max_model_len": arch.max_model_len,
        "num_params": float(num_params), "dtype_bytes": 2, "tensor_parallel": 1,
        "checkpoint": str(path),
    }


def resolve_model(name_or_path: str) -> dict[str, Any]:
    """Model config for ``name_or_path``: a name in ``conf/model/`` or a local checkpoint directory.

    Raises:
        FileNotFoundError: it looks like a path (contains a separator or starts with ``.``/``~``)
            but no such directory exists, or the directory has no ``config.json``.
        ValueError: an unknown name (the message lists the known ones) or an unsupported
            architecture in ``config.json``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return model_cfg_from_hf_dir(path)
    if any(sep in name_or_path for sep in ("/", "\\")) or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist")
    cfg_file = CONF_MODEL_DIR / f"{name_or_path}.yaml"
    if not cfg_file.is_file():
        raise ValueError(
            f"unknown model {name_or_path!r}; choose one of: {', '.join(model_names())} "
            "or give a local Hugging Face checkpoint directory"
        )
    return dict(yaml.safe_load(cfg_file.read_text()))
