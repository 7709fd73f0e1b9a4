"""The Llama-family forward (Llama, Mistral, Qwen2, SmolLM) over a paged KV cache, plain PyTorch.

One call runs a FLAT mixed batch — the concatenation of every scheduled sequence's new tokens
(decode tokens and prefill chunks alike, no padding) — with per-token positions. Per layer:
fused qkv matmul over all tokens, RoPE, then the attention backend (:mod:`kvlab.kernels.backend`)
writes the new K/V into the layer's slice of the :class:`~kvlab.kernels.kv_cache.KVCache` and
attends through each sequence's block table; then a fused gate/up SwiGLU MLP. Only the rows that
sample go through the final norm and lm_head. The flat order of the tokens is the backend's
(``meta.order``); the model only follows it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kvlab.kernels import AttentionBackend, KVCache, get_backend
from kvlab.models.config import ArchConfig
from kvlab.models.linear import LinearFn, prepare_weight
from kvlab.models.rope import RotaryEmbedding

MATMUL_WEIGHTS = ("qkv", "o", "gate_up", "down")  # what goes through ``linear`` (plus the lm_head)


class LlamaModel:
    """Weights in kvlab's layout (see :func:`kvlab.models.loader.convert_hf_state_dict`) plus
    the RoPE tables; stateless between calls (the KV cache is passed in)."""

    def __init__(self, arch: ArchConfig, weights: dict[str, torch.Tensor],
                 backend: AttentionBackend | None = None, linear: LinearFn | None = None,
                 blocks: dict[str, Any] | None = None) -> None:
        """``blocks``: the checkpoint's block matrices by kvlab name (:mod:`kvlab.models.gguf_blocks`),
        attached to the matmul weights where ``linear`` can use them (:mod:`kvlab.models.block_linear`)."""
        self.arch = arch
        self.backend = backend or get_backend("torch")
        self.linear: LinearFn = linear or F.linear  # see kvlab.models.linear
        embed = weights["embed"]
        self.device, self.dtype = embed.device, embed.dtype
        self.embed = embed
        self.norm = weights["norm"]
        layers = [
            {name: weights.get(f"{i}.{name}") for name in
             ("attn_norm", "qkv", "qkv_bias", "o", "mlp_norm", "gate_up", "down")}
            for i in range(arch.num_layers)
        ]
        tensors = {id(t): t for layer in layers for t in layer.values() if t is not None}
        tensors.update({id(t): t for t in (embed, weights["lm_head"], self.norm)})
        self.num_params = sum(t.numel() for t in tensors.values())
        # the matmul path may want its weights in its own layout (a oneDNN prepack), once, here,
        # and may also read the checkpoint's block-quantized copy of them (small batches)
        blocks = blocks or {}
        attach = getattr(self.linear, "attach", None)

        def prep(name: str, t: torch.Tensor) -> Any:
            t = prepare_weight(self.linear, t)
            return attach(t, blocks.get(name)) if attach is not None else t

        self.lm_head = prep("lm_head", weights["lm_head"])
        self.layers = [{k: prep(f"{i}.{k}", t) if k in MATMUL_WEIGHTS else t for k, t in layer.items()}
                       for i, layer in enumerate(layers)]
        self.rope = RotaryEmbedding(arch.head_dim, arch.max_model_len, arch.rope_theta,
                                    arch.rope_scaling, self.device, self.dtype)
        self.scale = arch.head_dim ** -0.5
        self.q_size = arch.num_heads * arch.head_dim
        self.kv_size = arch.num_kv_heads * arch.head_dim

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.arch.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: KVCache,
                meta: Any, logit_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Run the flat batch and return fp32 logits.

        Args:
            input_ids, positions: [tokens] long, flat order as described by ``meta``.
            kv_cache: the KV cache; the new tokens' K/V are written into it (mutated in place).
            meta: this step's metadata, built by ``self.backend.build_metadata``.
            logit_rows: flat token indices whose logits are wanted; None = every token.

        Returns:
            [len(logit_rows), vocab] float32 logits.
        """
        a = self.arch
        T = input_ids.shape[0]
        x = self.embed.index_select(0, input_ids)
        cos, sin = self.rope.tables(positions)
        heads_qk = a.num_heads + a.num_kv_heads
        for i, w in enumerate(self.layers):
            h = self._rms_norm(x, w["attn_norm"])
            qkv = self.linear(h, w["qkv"], w["qkv_bias"])
            qk, v = qkv.split([self.q_size + self.kv_size, self.kv_size], dim=-1)
            # q and k are adjacent heads of one row: one rotation for both (half the small ops)
            q, k = self.rope.apply(qk.view(T, heads_qk, a.head_dim), cos, sin).split(
                [a.num_heads, a.num_kv_heads], dim=1)
            v = v.view(T, a.num_kv_heads, a.head_dim)
            layer = kv_cache.layers[i]
            self.backend.write_kv(layer, k, v, meta)
            o = self.backend.forward(layer, q, meta, self.scale)
            x = x + self.linear(o.reshape(T, self.q_size).to(x.dtype), w["o"])
            h = self._rms_norm(x, w["mlp_norm"])
            gate, up = self.linear(h, w["gate_up"]).chunk(2, dim=-1)
            x = x + self.linear(F.silu(gate) * up, w["down"])
        if logit_rows is not None:
            x = x.index_select(0, logit_rows)
        return self.linear(self._rms_norm(x, self.norm), self.lm_head).float()
