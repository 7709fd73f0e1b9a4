"""KV-cache bytes per token and per block: the ONE formula both executors size their pools with.

Torch-free on purpose: the simulator's model shapes (:mod:`kvlab.models.shapes`) and the real
cache (:class:`kvlab.kernels.kv_cache.KVCache`) both call it, so a block costs the same bytes in
a paper-scale simulation and on the real model. Today the only KV format is ``none`` (K and V
stored in the model dtype); a quantized format adds its data bits and its per-block metadata
(scales, zero points) here, and both executors follow.
"""

from __future__ import annotations


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                       tensor_parallel: int = 1) -> int:
    """K and V of one token across all layers: ``2 x layers x kv_heads x head_dim x dtype_bytes``,
    divided by the tensor-parallel degree (each GPU holds ``kv_heads / tp`` heads)."""
    if num_kv_heads % tensor_parallel:
        raise ValueError(f"tensor_parallel={tensor_parallel} must divide num_kv_heads={num_kv_heads}")
    return 2 * num_layers * (num_kv_heads // tensor_parallel) * head_dim * dtype_bytes


def kv_bytes_per_block(block_size: int, bytes_per_token: int, metadata_bytes_per_block: int = 0) -> int:
    """Bytes one block costs: its token slots plus the per-block metadata stored beside them
    (0 for the unquantized format)."""
    return block_size * bytes_per_token + metadata_bytes_per_block
