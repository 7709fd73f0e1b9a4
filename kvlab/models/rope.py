"""Rotary position embeddings: cos/sin tables built once per model, indexed by position per step.

The rotation is the Hugging Face ("rotate half") convention that Llama-family checkpoints on the
Hub are stored in: dimension ``i`` pairs with ``i + head_dim/2``. Scaling: ``default``,
``linear`` and ``llama3`` (Llama 3.1's frequency-dependent interpolation); anything else is a
``ValueError`` naming the supported kinds.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SUPPORTED_ROPE_SCALING = ("default", "linear", "llama3")


def inv_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Per-pair inverse frequencies (fp64 on CPU for exactness), with the configured scaling."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])  # type: ignore[index]
    if kind == "llama3":
        s = scaling or {}
        factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
        old_len = float(s["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        return torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    raise ValueError(f"unsupported rope scaling {kind!r}; supported: {', '.join(SUPPORTED_ROPE_SCALING)}")


class RotaryEmbedding:
    """Holds ``cos``/``sin`` tables of shape [max_len, head_dim] (built once, on the model device).

    ``apply(x, positions)`` rotates ``x`` of shape [tokens, heads, head_dim] and returns a new
    tensor; the tables are never rebuilt per step.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float, scaling: dict[str, Any] | None,
                 device: torch.device, dtype: torch.dtype) -> None:
        inv = inv_frequencies(head_dim, theta, scaling)
        # HF computes the angles in fp32; doing the same keeps equality tests tight.
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv.float())
        emb = torch.cat([angles, angles], dim=-1)
        self.cos = emb.cos().to(device=device, dtype=dtype)
        self.sin = emb.sin().to(device=device, dtype=dtype)
        self.half = head_dim // 2

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin rows for ``positions``, shaped [tokens, 1, head_dim] to broadcast over heads."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x * cos + rotate_half(x) * sin for x of shape [tokens, heads, head_dim]."""
        x1, x2 = x[..., : self.half], x[..., self.half:]
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin
