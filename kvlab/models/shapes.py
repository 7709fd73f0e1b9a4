"""Model shapes: the numbers the cost model and the KV budget need, loaded from ``conf/model``.

A :class:`ModelShape` is pure arithmetic over a transformer's dimensions (no weights). Sizes are
given both for the whole model and *per tensor-parallel shard* (``*_per_gpu``), following
Megatron-style sharding: attention heads, FFN columns and the vocabulary are split ``tp`` ways;
norms, row-parallel biases and learned position embeddings are replicated on every GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from kvlab.kv_format import kv_bytes_per_token as _kv_bytes_per_token

ARCHS = ("opt", "llama")
# Keys a conf/model yaml may carry that the shape does not use (owned by the real model loader).
_IGNORED_KEYS = frozenset({"checkpoint", "rope_theta"})


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a decoder-only transformer. Immutable; all sizes in elements or bytes.

    ``arch`` selects the layer layout: ``opt`` (LayerNorm, biases, ReLU MLP of 2 matrices,
    learned positions, tied embeddings) or ``llama`` (RMSNorm, no biases, gated MLP of 3
    matrices, rotary positions). ``num_params`` (optional) is the published count; it is checked
    against the analytic count so a typo in a dimension fails loudly.
    """

    name: str
    arch: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    max_model_len: int
    dtype_bytes: int
    tensor_parallel: int = 1
    num_params: float | None = None
    tied_embeddings: bool = True

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelShape:
        """Build from a ``conf/model/*.yaml`` mapping; raise ``ValueError`` naming a bad key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known - _IGNORED_KEYS)
        if unknown:
            raise ValueError(f"model config: unknown key(s) {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in fields(cls) if f.name not in cfg and f.name in _REQUIRED)
        if missing:
            raise ValueError(f"model config: missing key(s) {missing}")
        kwargs = {k: cfg[k] for k in known if k in cfg}
        if kwargs.get("num_params") is not None:
            kwargs["num_params"] = float(kwargs["num_params"])
        shape = cls(**kwargs)
        shape.validate()
        return shape

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        for key in _POSITIVE_INTS:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model config {self.name!r}: {key} must be a positive int, got {value!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"model config {self.name!r}: arch must be one of {ARCHS}, got {self.arch!r}")
        if self.dtype_bytes not in (1, 2, 4):
            raise ValueError(f"model config {self.name!r}: dtype_bytes must be 1, 2 or 4")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model config {self.name!r}: num_heads must be a multiple of num_kv_heads")
        if self.num_heads % self.tensor_parallel or self.num_kv_heads % self.tensor_parallel:
            raise ValueError(
                f"model config {self.name!r}: tensor_parallel must divide num_heads and num_kv_heads")
        if self.num_params is not None:
            if self.num_params <= 0:
                raise ValueError(f"model config {self.name!r}: num_params must be > 0")
            ratio = self.param_count() / self.num_params
            if not 0.97 < ratio < 1.03:
                raise ValueError(
                    f"model config {self.name!r}: num_params={self.num_params:.4g} disagrees with the "
                    f"dimensions ({self.param_count():.4g} analytic); check the shape keys"
                )

    # ---- parameters ---------------------------------------------------------------------
    def _layer_params(self, tp: int) -> int:
        h, q, kv, f = self.hidden_size, self.num_heads * self.head_dim, self.kv_dim, self.ffn_size
        if self.arch == "opt":
            attn = h * (q + 2 * kv) // tp + (q + 2 * kv) // tp + q * h // tp + h
            mlp = 2 * h * f // tp + f // tp + h
            norms = 2 * 2 * h
        else:
            attn = h * (q + 2 * kv) // tp + q * h // tp
            mlp = 3 * h * f // tp
            norms = 2 * h
        return attn + mlp + norms

    def _embedding_params(self, tp: int) -> int:
        emb = self.vocab_size * self.hidden_size // tp * (1 if self.tied_embeddings else 2)
        if self.arch == "opt":  # learned positions (max_model_len + 2 offset rows), final LayerNorm
            return emb + (self.max_model_len + 2) * self.hidden_size + 2 * self.hidden_size
        return emb + self.hidden_size  # final RMSNorm

    def param_count(self, per_gpu: bool = False) -> int:
        """Analytic parameter count for the whole model, or for one tensor-parallel shard."""
        tp = self.tensor_parallel if per_gpu else 1
        return self.num_layers * self._layer_params(tp) + self._embedding_params(tp)

    @property
    def param_bytes_per_gpu(self) -> int:
        return self.param_count(per_gpu=True) * self.dtype_bytes

    @property
    def matmul_params_per_gpu(self) -> int:
        """Weights a token multiplies through in the decoder layers on one GPU (no embeddings)."""
        return self.num_layers * self._layer_params(self.tensor_parallel)

    @property
    def lm_head_params_per_gpu(self) -> int:
        return self.vocab_size * self.hidden_size // self.tensor_parallel

    # ---- KV cache -----------------------------------------------------------------------
    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for one token, all layers, whole model (:func:`kvlab.kv_format.kv_bytes_per_token`,
        the formula the real KV cache uses too)."""
        return _kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype_bytes)

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        return self.kv_bytes_per_token // self.tensor_parallel

    # ---- activations and FLOPs ----------------------------------------------------------
    def activation_peak_bytes_per_gpu(self, num_tokens: int) -> int:
        """Peak activation memory for a ``num_tokens`` forward (paper-era ``memory_analyzer``:
        the widest intermediate plus the residual stream; attention maps never materialized)."""
        tp = self.tensor_parallel
        ffn_width = self.ffn_size * (2 if self.arch == "llama" else 1) // tp  # gate+up for llama
        widest = max(self.hidden_size // tp, ffn_width)
        return num_tokens * (widest + self.hidden_size) * self.dtype_bytes

    @property
    def linear_flops_per_token_per_gpu(self) -> int:
        """2 FLOPs per weight per token through the decoder layers of one shard."""
        return 2 * self.matmul_params_per_gpu

    @property
    def attn_flops_per_pair_per_gpu(self) -> int:
        """FLOPs for one (query token, key position) pair: QK^T and PV, 2 x head_dim each, per
        query head on this shard, all layers."""
        return 4 * self.head_dim * (self.num_heads // self.tensor_parallel) * self.num_layers


_REQUIRED = {
    "name", "arch", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
    "ffn_size", "vocab_size", "max_model_len", "dtype_bytes",
}
_POSITIVE_INTS = (
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_size",
    "vocab_size", "max_model_len", "dtype_bytes", "tensor_parallel",
)
