"""``executor=sim``: the cost-model executor. Runs no model; predicts each step's duration.

The engine, allocator and scheduler are the real ones; only the forward pass is replaced by
:class:`~kvlab.executor.cost_model.CostModel`. Sampled tokens are dummies: uniform pseudo-random
ids in ``[FIRST_TOKEN_ID, vocab)`` from one ``numpy`` Generator seeded with ``cfg.seed`` (so a
run is deterministic for a seed), never ``eos`` (the sim has none) and never one of the
request's ``stop_token_ids``. Output lengths therefore come from ``max_tokens`` (the trace's
forced length), as in the paper's experiments. Beam candidates get distinct random tokens with
random logprobs in descending order, so the engine's beam selection keeps random beams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kvlab.executor import EXECUTORS
from kvlab.executor.base import Sample, ScheduledSeq, StepInput, StepOutput
from kvlab.executor.cost_calibrated import CalibratedCostModel
from kvlab.executor.cost_model import (
    KERNELS_PER_LAYER,
    PAPER_MAX_NUM_BATCHED_TOKENS,
    WORKSPACE_BYTES,
    CostModel,
    kv_budget_bytes_per_gpu,
)
from kvlab.hardware import GIB, HardwareProfile
from kvlab.kv_quant_format import KVQuantConfig
from kvlab.models.shapes import ModelShape

FIRST_TOKEN_ID = 4  # ids 0-3 are special (pad/bos/eos/unk) in OPT and LLaMA vocabularies
_EMPTY: frozenset[int] = frozenset()
_CHUNK = 4096


class SimExecutor:
    """Cost-model executor for one model on one hardware profile (x tensor_parallel GPUs).

    ``kv_capacity_blocks`` and ``kv_bytes_per_block`` are *per GPU* (a block's KV is split
    ``tensor_parallel`` ways and every GPU holds its shard of every block), as in vLLM's
    ``cache_block_size``; ``cpu_capacity_blocks`` sizes the swap pool the same way.
    """

    eos_token_id: int | None = None  # the sim never emits an end token: lengths come from max_tokens
    virtual_time = True  # the engine advances a virtual clock by each step's modelled duration

    def __init__(self, shape: ModelShape, hw: HardwareProfile, *, gpu_memory_utilization: float = 0.9,
                 swap_space_gib: float = 4.0, max_num_batched_tokens: int = PAPER_MAX_NUM_BATCHED_TOKENS,
                 max_model_len: int | None = None, seed: int = 0,
                 kernels_per_layer: int = KERNELS_PER_LAYER, workspace_bytes: int = WORKSPACE_BYTES,
                 kv_quant: Any = None) -> None:
        if swap_space_gib < 0:
            raise ValueError(f"kv.swap_space_gib must be >= 0, got {swap_space_gib}")
        if max_model_len is not None and max_model_len <= 0:
            raise ValueError(f"kv.max_model_len must be > 0, got {max_model_len}")
        if kernels_per_layer <= 0:
            raise ValueError(f"executor.kernels_per_layer must be > 0, got {kernels_per_layer}")
        self.shape, self.hw = shape, hw
        self.kv_quant = KVQuantConfig.parse(kv_quant)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.swap_space_gib = swap_space_gib
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len or shape.max_model_len
        self.kernels_per_layer = kernels_per_layer
        self.workspace_bytes = workspace_bytes
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._ids: list[int] = []
        self._us: list[float] = []
        self._budget_bytes = kv_budget_bytes_per_gpu(shape, hw, gpu_memory_utilization,
                                                     max_num_batched_tokens, workspace_bytes)
        self._cost: CostModel | None = None
        self.calibrated: CalibratedCostModel | None = None
        self.provenance_problems: list[str] = []
        if hw.calibration is not None:
            self._use_profile(hw.calibration, hw.force, hw.time_scales)
        self.num_gpu_blocks = self.num_cpu_blocks = 0

    def _use_profile(self, prof: dict[str, Any], force: bool, scales: dict[str, float | None]) -> None:
        """``hardware=calibrated``: refuse a profile of another machine/model/dtype (unless
        ``force``), predict steps with its fitted model, and size KV as the profiled executor did."""
        from kvlab.calibration_profile import check_provenance

        self.provenance_problems = check_provenance(prof, model=self.shape.name,
                                                    dtype_bytes=self.shape.dtype_bytes, force=force)
        self.calibrated = CalibratedCostModel.from_profile(prof, scales)
        if prof.get("kv_budget_bytes"):
            self._budget_bytes = int(prof["kv_budget_bytes"])

    # ---- memory -------------------------------------------------------------------------
    def kv_capacity_blocks(self, block_size: int) -> int:
        """``(budget - fixed) // bytes_per_block`` in the KV format (the real executor's formula)."""
        s = self.shape
        return self.kv_quant.capacity_blocks(self._budget_bytes, s.num_layers, s.num_kv_heads, s.head_dim,
                                             s.dtype_bytes, block_size, s.tensor_parallel)

    def kv_bytes_per_block(self, block_size: int) -> int:
        """Bytes of one block on one GPU in the KV format (:mod:`kvlab.kv_quant_format`)."""
        s = self.shape
        return self.kv_quant.bytes_per_block(s.num_layers, s.num_kv_heads, s.head_dim, s.dtype_bytes, block_size,
                                             s.tensor_parallel)

    def cpu_capacity_blocks(self, block_size: int) -> int:
        return int(self.swap_space_gib * GIB) // self.kv_bytes_per_block(block_size)

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        """Record the pool sizes and fold the cost model's constants for ``block_size``."""
        if num_gpu_blocks < 0 or num_cpu_blocks < 0:
            raise ValueError("init_cache: block counts must be >= 0")
        self.num_gpu_blocks, self.num_cpu_blocks = num_gpu_blocks, num_cpu_blocks
        self._cost = CostModel(self.shape, self.hw, block_size, self.kernels_per_layer, self.kv_quant)

    def cost_model(self, block_size: int) -> CostModel:
        """The cost model for ``block_size`` (the one in use if it matches)."""
        if self._cost is not None and self._cost.block_size == block_size:
            return self._cost
        return CostModel(self.shape, self.hw, block_size, self.kernels_per_layer, self.kv_quant)

    # ---- microbenchmarks (paper Fig. 19a) ------------------------------------------------
    def swap_time_s(self, num_blocks: int, block_size: int) -> float:
        """Seconds to move ``num_blocks`` blocks one way between CPU and GPU."""
        return self.cost_model(block_size).swap_time(num_blocks)

    def prefill_time_s(self, num_tokens: int) -> float:
        """Seconds to recompute a ``num_tokens`` prompt alone (block size does not matter)."""
        return self.cost_model(16).prefill_time(num_tokens)

    # ---- the step -----------------------------------------------------------------------
    def execute(self, step: StepInput) -> StepOutput:
        """Predict the step's duration and draw dummy samples. Advances the RNG (only)."""
        cost = self._cost
        if cost is None:
            raise RuntimeError("SimExecutor.execute called before init_cache()")
        bsz = cost.block_size
        if self.calibrated is not None:
            return self._execute_calibrated(step, cost)
        tokens = pairs = cached = gathered = logits = nseq = fp_read = 0
        window = cost.residual_window
        samples: dict[int, list[Sample]] = {}
        for s in step.seqs:
            n = len(s.token_ids)
            start = s.start_pos
            tokens += n
            nseq += n > 0
            pairs += n * start + n * (n + 1) // 2
            if start:
                cached += start
                gathered += -(-(start + n) // bsz)
            if window and n:
                fp_read += min(window, start + n)
            if s.num_samples > 0:
                logits += 1
                samples[s.seq_id] = self._sample(s)
            else:
                samples[s.seq_id] = []
        swap_s = cost.swap_time(len(step.blocks_to_swap_out)) + cost.swap_time(len(step.blocks_to_swap_in))
        duration = (cost.step_time(tokens, pairs, cached, gathered, logits, nseq, fp_read) + swap_s
                    + cost.copy_time(len(step.blocks_to_copy)))
        return StepOutput(samples=samples, duration_s=duration, swap_time_s=swap_s)

    def _execute_calibrated(self, step: StepInput, cost: CostModel) -> StepOutput:
        """The step on the fitted model of the profiled executor (execute + engine host time);
        swaps and copies keep the profile's bandwidth constants."""
        assert self.calibrated is not None
        samples = {s.seq_id: (self._sample(s) if s.num_samples > 0 else []) for s in step.seqs}
        swap_s = cost.swap_time(len(step.blocks_to_swap_out)) + cost.swap_time(len(step.blocks_to_swap_in))
        duration = self.calibrated.step_time(step.seqs) + swap_s + cost.copy_time(len(step.blocks_to_copy))
        return StepOutput(samples=samples, duration_s=duration, swap_time_s=swap_s)

    def _draws(self, k: int) -> tuple[list[int], list[float]]:
        """``k`` token ids and ``k`` uniforms from pre-drawn buffers (one RNG call per 4096
        draws keeps a step at a few µs; the stream is still a pure function of the seed)."""
        if len(self._ids) < k:
            n = max(_CHUNK, k)
            self._ids = self._rng.integers(FIRST_TOKEN_ID, self.shape.vocab_size, size=n).tolist()[::-1]
            self._us = self._rng.random(n).tolist()[::-1]
        ids, us = self._ids, self._us
        return [ids.pop() for _ in range(k)], [us.pop() for _ in range(k)]

    def _sample(self, s: ScheduledSeq) -> list[Sample]:
        span = self.shape.vocab_size - FIRST_TOKEN_ID
        k = s.num_samples
        stop = set(s.sampling.stop_token_ids) if s.sampling.stop_token_ids else _EMPTY
        if s.beam:  # k distinct candidates, logprobs descending
            ids: list[int] = []
            while len(ids) < k:
                t = self._draws(1)[0][0]
                if t not in ids and t not in stop:
                    ids.append(t)
            lps = sorted((math.log(u) if u > 0 else -30.0 for u in self._draws(k)[1]), reverse=True)
            return [Sample(t, lp) for t, lp in zip(ids, lps)]
        if k == 1 and not stop and not s.sampling.logprobs and self._ids:  # the common decode case
            u = self._us.pop()
            return [Sample(self._ids.pop(), math.log(u) if u > 0 else -30.0)]
        out = []
        for t, u in zip(*self._draws(k)):
            while t in stop:
                t = FIRST_TOKEN_ID + (t + 1 - FIRST_TOKEN_ID) % span
            lp = math.log(u) if u > 0 else -30.0
            top = None
            if s.sampling.logprobs:
                alts = self._draws(s.sampling.logprobs)[0]
                top = {t: lp} | {a: lp - 1.0 - i for i, a in enumerate(alts) if a != t}
            out.append(Sample(t, lp, top))
        return out


def _group(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    from kvlab.config import section

    value = section(cfg, name)
    if not value:
        raise ValueError(f"sim executor: config needs a {name!r} group")
    return value


@EXECUTORS.register("sim")
def build_sim_executor(cfg: Any) -> SimExecutor:
    """Factory from the whole Hydra config: ``cfg.model``, ``cfg.hardware``,
    ``cfg.kv.{gpu_memory_utilization,swap_space_gib,max_model_len}``,
    ``cfg.scheduler.max_num_batched_tokens`` (paper-era 2560 if absent), ``cfg.seed`` and the
    options of ``conf/executor/sim.yaml`` (``cfg.executor``)."""
    from kvlab.config import KVConfig, section, to_plain

    cfg = to_plain(cfg)
    kv, ex, sched = KVConfig.from_config(cfg), section(cfg, "executor"), section(cfg, "scheduler")
    shape = ModelShape.from_config(_group(cfg, "model"))
    hw = HardwareProfile.from_config(_group(cfg, "hardware"))
    return SimExecutor(
        shape, hw,
        gpu_memory_utilization=kv.gpu_memory_utilization,
        swap_space_gib=kv.swap_space_gib,
        max_num_batched_tokens=int(sched.get("max_num_batched_tokens") or PAPER_MAX_NUM_BATCHED_TOKENS),
        max_model_len=kv.max_model_len,
        seed=int(cfg.get("seed") or 0),
        kernels_per_layer=int(ex.get("kernels_per_layer") or KERNELS_PER_LAYER),
        workspace_bytes=int(float(ex["workspace_gib"] if ex.get("workspace_gib") is not None else 1.0) * GIB),
        kv_quant=KVQuantConfig.from_config(cfg),
    )
