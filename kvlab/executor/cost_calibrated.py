"""The calibrated step-time model: a linear sum of per-step work terms, fitted on the real executor.

Where the datasheet :class:`~kvlab.executor.cost_model.CostModel` predicts a GPU step from a
roofline, this model predicts the step of *the executor that was profiled* (today: kvlab's torch
executor on a CPU) from the work the step contains. Functional form, one term per kind of work::

    t_execute = c_step                         fixed per forward: op dispatch of every layer + weight streaming
              + c_decode_seq  x decode_seqs    per decode sequence (metadata, block-table rows, sampling setup)
              + c_chunk       x chunks         per multi-token chunk (one gather + one SDPA call per layer each)
              + c_token       x tokens         per batched token: the dense layers (2 x matmul params FLOPs)
              (step/tokens split by matmul path: ``block_step``/``block_tokens`` for a step of at most
               ``block_rows`` tokens, whose layer matmuls read the GGUF blocks, kvlab.models.block_linear;
               ``block_multirow`` for such a step of 2+ tokens: the block kernel has a 1-row path with
               four independent FMA chains and a multi-row path with one chain per row, so 1 -> 2 rows
               costs far more than 2 -> 4: 22.7 / 32.5 / 34.6 ms at 1 / 2 / 4 rows on the 2026-12-06 VM)
              + c_decode_kv   x decode_kv      per KV token the decode group attends (sum of its contexts)
              + c_decode_pad  x decode_pad     per padding slot when decodes are padded to the longest context
              + c_chunk_kv    x chunk_kv       per KV token a chunk gathers (its whole context)
              + c_causal_pair x causal_pairs   per causal (query, key) pair of chunks starting at 0
              + c_masked_pair x masked_pairs   per (query, key) pair of chunks with cached context (masked SDPA)
              + c_head        x head           per step that samples: streaming the lm head once
              + c_logit_row   x logit_rows     per sampled row: lm head (2 x vocab x hidden FLOPs) + sampler
              (head/logit_rows likewise split: ``block_head``/``block_logit_rows`` at <= block_rows rows)
    t_host    = h_step + h_seq x seqs          engine work outside execute(): schedule, commit, records
    step      = t_execute + t_host

Every coefficient is seconds per unit of its feature and >= 0 (fitted by non-negative least
squares, :mod:`kvlab.calibrate.fit`), so each keeps its meaning: e.g. ``2 x matmul_params /
c_token`` is the achieved dense FLOP/s and ``kv_bytes_per_token / c_decode_kv`` the achieved
read bandwidth. The features mirror how the torch executor batches a step: decodes either
attended in place per sequence (the CPU backend's C op: cost follows the sum of contexts) or
padded to the longest context in one SDPA (the torch path: the padding slots cost too, so they are
a feature of their own and the fit says which path the profiled executor took); each chunk its own
gather and SDPA, see ``kvlab/kernels/paged_attention.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvlab.executor.base import ScheduledSeq

# (name, unit of the feature, meaning of its coefficient)
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("step", "step", "fixed per forward: op dispatch of every layer and streaming the weights"),
    ("decode_seqs", "seq", "per decode sequence: metadata, block-table row, batch bookkeeping"),
    ("chunks", "chunk", "per multi-token chunk: its own KV gather and SDPA call in every layer"),
    ("tokens", "token", "per batched token: the dense layers (qkv, out, MLP), norms, rope"),
    ("decode_kv", "token", "per KV token the decode group attends (the sum of the decode contexts)"),
    ("decode_pad", "token", "per padding slot of the decode group (longest context x decodes - sum)"),
    ("chunk_kv", "token", "per KV token a chunk gathers through its block table (its whole context)"),
    ("causal_pairs", "pair", "per causal (query, key) pair of chunks that start at position 0"),
    ("masked_pairs", "pair", "per (query, key) pair of chunks with cached context (explicit mask)"),
    ("head", "step", "per step with sampled rows on the dense lm head: streaming its weights once"),
    ("logit_rows", "row", "per sampled row: lm head GEMV over the vocabulary and the sampler"),
    ("block_step", "step", "fixed per forward whose layer matmuls read the GGUF blocks (<= block_rows tokens)"),
    ("block_tokens", "token", "per batched token of such a step (block matmuls, norms, rope)"),
    ("block_multirow", "step", "per such step of 2+ tokens: the block kernel's multi-row path, not its 1-row one"),
    ("block_head", "step", "per step whose <= block_rows sampled rows use the lm head's GGUF blocks"),
    ("block_logit_rows", "row", "per sampled row on the lm head's GGUF blocks, and the sampler"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f[0] for f in FEATURES)
HOST_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("step", "step", "engine work per step outside execute(): schedule, build inputs, commit, records"),
    ("seqs", "seq", "engine work per scheduled sequence and step"),
)


def step_features(seqs: Sequence[ScheduledSeq], block_rows: int = 0) -> dict[str, float]:
    """The feature vector of one step (see the module docstring); ``block_rows``: the largest
    matmul (in rows) the profiled executor runs over GGUF blocks, 0 = none. Pure."""
    f = dict.fromkeys(FEATURE_NAMES, 0.0)
    seqs = [s for s in seqs if s.token_ids]
    if not seqs:
        return f
    f["step"] = 1.0
    max_dec = sum_dec = 0
    for s in seqs:
        n, start = len(s.token_ids), s.start_pos
        ctx = start + n
        f["tokens"] += n
        if s.num_samples > 0:
            f["logit_rows"] += 1
        if n == 1:
            f["decode_seqs"] += 1
            max_dec = max(max_dec, ctx)
            sum_dec += ctx
            continue
        f["chunks"] += 1
        f["chunk_kv"] += ctx
        if start == 0:
            f["causal_pairs"] += n * (n + 1) / 2
        else:
            f["masked_pairs"] += n * ctx
    f["decode_kv"] = float(sum_dec)
    f["decode_pad"] = f["decode_seqs"] * max_dec - sum_dec
    if 0 < f["tokens"] <= block_rows:  # every layer matmul of this step reads the blocks
        f["block_step"], f["block_tokens"], f["step"], f["tokens"] = 1.0, f["tokens"], 0.0, 0.0
        f["block_multirow"] = 1.0 if f["block_tokens"] >= 2 else 0.0
    rows = f["logit_rows"]
    if 0 < rows <= block_rows:
        f["block_head"], f["block_logit_rows"], f["logit_rows"] = 1.0, rows, 0.0
    elif rows > 0:
        f["head"] = 1.0
    return f


REGIMES = ("block", "dense_decode", "dense_chunk")
# The decode rows over which a dense-decode scale may vary with the batch (the speed probe's dense
# decodes span them, kvlab.calibrate.probe) and where that scale is anchored (their geometric middle).
SLOPE_ROWS = (2.0, 24.0)
SLOPE_REF_ROWS = (SLOPE_ROWS[0] * SLOPE_ROWS[1]) ** 0.5


def clamp_rows(rows: float) -> float:
    """``rows`` clamped to SLOPE_ROWS. Pure."""
    return min(max(float(rows), SLOPE_ROWS[0]), SLOPE_ROWS[1])


def rows_factor(rows: float, slope: float) -> float:
    """(rows / SLOPE_REF_ROWS) ** slope, rows clamped to SLOPE_ROWS. Pure."""
    return float((clamp_rows(rows) / SLOPE_REF_ROWS) ** slope)


def regime(features: Mapping[str, float]) -> str:
    """Which speed regime a step's features put it in: ``block`` (its matmuls read the GGUF blocks:
    compute-bound dequantisation), ``dense_decode`` (decode-only on the dense weights: streaming
    them from DRAM) or ``dense_chunk`` (a prompt chunk on the dense weights: large GEMMs). Pure."""
    if features.get("block_step", 0.0) > 0:
        return "block"
    return "dense_chunk" if features.get("chunks", 0.0) > 0 else "dense_decode"


@dataclass(frozen=True)
class CalibratedCostModel:
    """Step time from fitted coefficients (seconds per feature unit). Immutable.

    ``coef`` maps every name of :data:`FEATURE_NAMES` to seconds per unit; ``host`` maps ``step``
    and ``seqs`` of :data:`HOST_FEATURES` to seconds (engine overhead outside ``execute``).
    """

    coef: Mapping[str, float]
    host: Mapping[str, float]
    block_rows: int = 0  # the profiled executor's executor.weight_blocks rows (0: none)
    # How much slower (>1) or faster (<1) the machine is now than the model predicts, per regime
    # (:func:`regime`; `--validate --speed-probe` measures them): ``time_scale`` multiplies steps on
    # the GGUF block path and every host time; ``dense_decode_time_scale`` decode-only steps on the
    # dense path; ``prefill_time_scale`` dense steps with a prompt chunk. None = time_scale.
    # Three because they drift apart on a shared VM (docs/simulator.md, "Three regimes").
    time_scale: float = 1.0
    prefill_time_scale: float | None = None
    dense_decode_time_scale: float | None = None
    # Dense decodes: the scale above holds at SLOPE_REF_ROWS decode rows and goes as
    # (rows / SLOPE_REF_ROWS) ** slope within SLOPE_ROWS (clamped outside): the probe measures how
    # the model's error changes with the batch (docs/simulator.md, "Scale by batch size"). 0 = flat.
    dense_decode_scale_slope: float = 0.0

    @classmethod
    def from_profile(cls, prof: Mapping[str, Any],
                     scales: Mapping[str, float | None] | None = None) -> CalibratedCostModel:
        """The model of a calibration profile (``kvlab.calibration_profile.load_profile``), with
        ``scales`` keyed as the config's (``time_scale``, ``time_scale_prefill``,
        ``time_scale_dense_decode``; missing or None: 1.0 / time_scale)."""
        s = scales or {}
        return cls({k: float(v["value"]) for k, v in prof["coefficients"].items()},
                   {k: float(v["value"]) for k, v in prof["host_overhead"].items()}, int(prof.get("block_rows") or 0),
                   s.get("time_scale") or 1.0, s.get("time_scale_prefill"), s.get("time_scale_dense_decode"),
                   float(s.get("time_scale_dense_decode_slope") or 0.0))

    def __post_init__(self) -> None:
        missing = [k for k in FEATURE_NAMES if k not in self.coef]
        if missing:
            raise ValueError(f"calibrated cost model: missing coefficient(s) {missing} (a profile made by an "
                             "older kvlab with another functional form: rerun `python -m kvlab.calibrate`)")
        for k in FEATURE_NAMES:
            if float(self.coef[k]) < 0:
                raise ValueError(f"calibrated cost model: coefficient {k} must be >= 0")
        for name, v in (("time_scale", self.time_scale), ("prefill_time_scale", self.prefill_time_scale),
                        ("dense_decode_time_scale", self.dense_decode_time_scale)):
            if v is not None and not v > 0:
                raise ValueError(f"calibrated cost model: {name} must be > 0, got {v}")

    def execute_time(self, features: Mapping[str, float]) -> float:
        """Seconds of ``execute()`` for a step with ``features``."""
        kind = regime(features)
        scale = (self.prefill_time_scale if kind == "dense_chunk"
                 else self.dense_decode_time_scale if kind == "dense_decode" else None) or self.time_scale
        if kind == "dense_decode" and self.dense_decode_scale_slope:
            scale *= rows_factor(features.get("decode_seqs", 0.0), self.dense_decode_scale_slope)
        return scale * sum(float(self.coef[k]) * features.get(k, 0.0) for k in FEATURE_NAMES)

    def host_time(self, num_seqs: int) -> float:
        """Seconds of engine work outside ``execute()`` for a step of ``num_seqs`` sequences."""
        if num_seqs <= 0:
            return 0.0
        return self.time_scale * (float(self.host.get("step", 0.0)) + float(self.host.get("seqs", 0.0)) * num_seqs)

    def step_time(self, seqs: Sequence[ScheduledSeq]) -> float:
        """Wall seconds one engine step takes: execute + host overhead."""
        feats = step_features(seqs, self.block_rows)
        if feats["step"] + feats["block_step"] == 0:
            return 0.0
        return self.execute_time(feats) + self.host_time(int(feats["decode_seqs"] + feats["chunks"]))
