"""The simulator's cost model: KV capacity from memory arithmetic, step time from first principles.

Pure functions of a :class:`ModelShape` and a :class:`HardwareProfile` (both per GPU of a
tensor-parallel group). No constant here is fitted to the vLLM paper; see ``docs/simulator.md``
for every equation and the source of every number.
"""

from __future__ import annotations

from typing import Any

from kvlab.hardware import GIB, HardwareProfile
from kvlab.kv_quant_format import KVQuantConfig
from kvlab.models.shapes import ModelShape

WORKSPACE_BYTES = GIB  # paper-era vLLM memory_analyzer: a fixed 1 GiB workspace per GPU
PAPER_MAX_NUM_BATCHED_TOKENS = 2560  # paper-era default (cacheflow add_server_arguments)
KERNELS_PER_LAYER = 12  # eager decoder layer: 2 norms, qkv, cache write, attn, out, 2 adds, 2 mlp gemms, act
# Dequantizing KV runs on the CUDA cores, not the tensor cores the dense-FLOP figure describes. A100
# datasheet: 312 TFLOP/s dense bf16 tensor vs 19.5 TFLOP/s fp32 CUDA-core = 16x; applied to every
# profile as ``hw.flops / 16`` (a datasheet ratio, not fitted). H100 SXM: 989 / 67 = 14.8x, close.
TENSOR_TO_VECTOR_FLOPS = 16


def kv_budget_bytes_per_gpu(
    shape: ModelShape,
    hw: HardwareProfile,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> int:
    """Bytes left for KV on one GPU: usable x utilization - params - activation peak - workspace
    - CUDA context. May be negative (the model does not fit)."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if max_num_batched_tokens <= 0:
        raise ValueError(f"max_num_batched_tokens must be > 0, got {max_num_batched_tokens}")
    usable = int(gpu_memory_utilization * hw.usable_memory_bytes)
    return int(usable - shape.param_bytes_per_gpu
               - shape.activation_peak_bytes_per_gpu(max_num_batched_tokens)
               - workspace_bytes - hw.context_bytes)


def kv_capacity_tokens(
    shape: ModelShape,
    hw: HardwareProfile,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> int:
    """KV token slots the budget holds (0 if the model does not fit). Blocks = tokens // B."""
    budget = kv_budget_bytes_per_gpu(shape, hw, gpu_memory_utilization, max_num_batched_tokens,
                                     workspace_bytes)
    return max(0, budget // shape.kv_bytes_per_token_per_gpu)


class CostModel:
    """Step and transfer times for one (model, hardware, block size). Constants are folded at
    construction so that :meth:`step_time` is a handful of float operations."""

    def __init__(self, shape: ModelShape, hw: HardwareProfile, block_size: int,
                 kernels_per_layer: int = KERNELS_PER_LAYER, kv_quant: Any = None) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.shape, self.hw, self.block_size = shape, hw, block_size
        tp, layers, dt = shape.tensor_parallel, shape.num_layers, shape.dtype_bytes
        kv_heads = shape.num_kv_heads // tp
        self.flops = hw.flops
        self.bandwidth = hw.bandwidth
        self.weight_bytes = shape.matmul_params_per_gpu * dt
        self.lin_flops_per_token = shape.linear_flops_per_token_per_gpu
        self.attn_flops_per_pair = shape.attn_flops_per_pair_per_gpu
        self.lm_head_flops_per_row = 2 * shape.lm_head_params_per_gpu
        self.lm_head_bytes = shape.lm_head_params_per_gpu * dt
        # KV format (kvlab.kv_quant_format): bytes a step reads per cached token = the format's data
        # and metadata (kivi2's residual-pool share is not read: its window tokens are read at full
        # precision instead, ``residual_window`` per sequence), plus dequantization arithmetic at
        # vector (CUDA-core) speed.
        q = KVQuantConfig.parse(kv_quant)
        self.kv_quant = q
        fp_bpt = shape.kv_bytes_per_token_per_gpu
        if q.name == "kivi2":
            no_pool = KVQuantConfig(name="kivi2", group_size=q.group_size, residual=q.residual,
                                    residual_pool_fraction=0.0)
            read = no_pool.bytes_per_token(layers, shape.num_kv_heads, shape.head_dim, dt, block_size, tp)
        else:
            read = q.bytes_per_token(layers, shape.num_kv_heads, shape.head_dim, dt, block_size, tp)
        self.kv_bytes_per_token = read
        self.kv_fp_extra_per_token = fp_bpt - read if q.name == "kivi2" else 0.0
        self.residual_window = q.residual if q.name == "kivi2" else 0
        elements = 2 * layers * kv_heads * shape.head_dim
        self.dequant_s_per_token = q.dequant_ops_per_element * elements / (hw.flops / TENSOR_TO_VECTOR_FLOPS)
        # Paged attention reads one (layer, kv head, K|V) tile of block_size tokens per gather; the
        # tile address comes from a dependent block-table load, so each gather costs two DRAM
        # latencies, overlapped across every warp the GPU can keep resident (Little's law).
        self.gathers_per_block = 2 * layers * kv_heads
        self.gather_cost_s = 2 * hw.dram_latency_s / hw.max_resident_warps
        self.launch_floor_s = kernels_per_layer * layers * hw.kernel_launch_s
        # Megatron TP: two all-reduces of the hidden activations per layer (ring: 2(tp-1)/tp).
        if tp > 1:
            ring = 2 * (tp - 1) / tp
            self.allreduce_s_per_token = 2 * layers * ring * shape.hidden_size * dt / hw.interconnect
            # + the serving engine's own cost per call (0 in the roofline mode; paper-era sets it)
            self.allreduce_fixed_s = 2 * layers * (hw.interconnect_latency_s + hw.engine_allreduce_s)
        else:
            self.allreduce_s_per_token = self.allreduce_fixed_s = 0.0
        self.step_overhead_s = hw.step_overhead_s
        # Serving-engine host work outside the forward (0 in the datasheet roofline mode; the
        # paper-era mode sets it, see docs/simulator.md "Paper-era mode").
        self.engine_step_s = hw.engine_step_overhead_s
        self.engine_per_seq_s = hw.engine_per_seq_s
        # driving tp workers: the paper-era engine's per-step Ray calls (docs/simulator.md), whose
        # payload per int is counted over the step's input tokens and block-table entries
        self.engine_per_int_s = 0.0
        if tp > 1:
            self.engine_step_s += tp * hw.engine_per_worker_step_s
            self.engine_per_seq_s += tp * hw.engine_per_worker_seq_s
            self.engine_per_int_s = tp * hw.engine_per_worker_int_s
        # Swap: vLLM keeps one K and one V tensor per layer, and copies block by block, so one
        # block is 2 x layers cudaMemcpyAsync calls of block_size x kv_heads x head_dim x dtype.
        self.copies_per_block = 2 * layers
        self.block_bytes = q.bytes_per_block(layers, shape.num_kv_heads, shape.head_dim, dt, block_size, tp)

    def step_time(self, num_tokens: int, attn_pairs: int, cached_tokens_read: int,
                  blocks_gathered: int, num_logit_rows: int, num_seqs: int = 0, fp_tokens_read: int = 0) -> float:
        """Seconds for one step on one GPU of the TP group (all GPUs run in lockstep).

        ``attn_pairs``: (query, key) pairs over the batch; ``cached_tokens_read``: KV tokens read
        from the cache; ``blocks_gathered``: blocks read through block tables;
        ``num_logit_rows``: positions whose logits are computed (sampled sequences);
        ``num_seqs``: sequences in the step (for the engine's per-sequence host overhead);
        ``fp_tokens_read``: of the KV tokens touched, those read at full precision (kivi2's window).
        """
        if num_tokens <= 0:
            return 0.0
        flops = (self.lin_flops_per_token * num_tokens + self.attn_flops_per_pair * attn_pairs
                 + self.lm_head_flops_per_row * num_logit_rows)
        kv_tokens = cached_tokens_read + num_tokens
        moved = (self.weight_bytes + (self.lm_head_bytes if num_logit_rows else 0)
                 + self.kv_bytes_per_token * kv_tokens + self.kv_fp_extra_per_token * fp_tokens_read)
        memory_s = moved / self.bandwidth + blocks_gathered * self.gathers_per_block * self.gather_cost_s
        compute_s = flops / self.flops + self.dequant_s_per_token * max(0, kv_tokens - fp_tokens_read)
        gpu_s = max(compute_s, memory_s, self.launch_floor_s)
        comm_s = self.allreduce_fixed_s + self.allreduce_s_per_token * num_tokens
        host_s = (self.engine_step_s + self.engine_per_seq_s * num_seqs
                  + self.engine_per_int_s * (num_tokens + blocks_gathered))
        return gpu_s + comm_s + self.step_overhead_s + host_s

    def prefill_time(self, num_tokens: int) -> float:
        """One sequence's prompt of ``num_tokens`` from scratch (the paper's recompute cost)."""
        pairs = num_tokens * (num_tokens + 1) // 2
        return self.step_time(num_tokens, pairs, 0, 0, 1)

    def swap_time(self, num_blocks: int) -> float:
        """CPU<->GPU transfer of ``num_blocks`` blocks in one direction: per-copy overhead plus
        bytes over achievable PCIe bandwidth."""
        if num_blocks <= 0:
            return 0.0
        return num_blocks * (self.copies_per_block * self.hw.copy_overhead_s
                             + self.block_bytes / self.hw.pcie)

    def copy_time(self, num_blocks: int) -> float:
        """GPU->GPU block copies (copy-on-write): one fused kernel reading and writing each block."""
        if num_blocks <= 0:
            return 0.0
        return self.hw.kernel_launch_s + 2 * num_blocks * self.block_bytes / self.bandwidth
