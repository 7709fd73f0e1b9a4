"""Speed probe: how much slower (or faster) the machine is now than a profile's model predicts.

A calibration profile is a snapshot of the machine's speed. On a shared VM that speed drifts by
10-20% between one half hour and the next (docs/simulator.md, "Repeats"), which no step-time
model can foresee. The probe times a fixed set of the grid's step shapes (warm-up, then shuffled
repeats, as ``kvlab.calibrate.grid.measure`` does) and compares each with the profile's *model*
at that shape. It reads the machine, never the workload being predicted.

Two choices, both measured on the developer's VM (docs/simulator.md, "Three regimes"):

* **Against the model, not the profile's stored medians.** A stored median of 4 repeats carries
  that point's noise (IQR 10-20% of it); the model is fitted on ~39 points and two real runs, so
  "now / model" is what the simulator must be multiplied by to match the machine now, and it also
  absorbs the model's own average bias over the probe's shapes.
* **Three regimes** (:func:`kvlab.executor.cost_calibrated.regime`): steps whose matmuls read
  the GGUF blocks (at most ``block_rows`` tokens: dequantisation compute), decode-only steps on
  the dense fp32 weights (streaming them from DRAM) and dense steps with a prompt chunk (large
  GEMMs). Sometimes the machine's drift moves them together and sometimes one alone: in one
  5-minute trace (2 threads, ``drift-paths-threads2.csv``) the 30-second medians of two block-path
  decodes correlated at 0.93, a dense decode with them at 0.41-0.44, a prefill with either at
  -0.16 to 0.22 (an earlier trace: 0.58-0.89 between every pair). So each probe shape is put in
  its regime by its own features, and each regime's scale is the median of its shapes' ratios:
  ``time_scale`` (block-path steps and the host time), ``time_scale_dense_decode`` and
  ``time_scale_prefill``. A regime without probe shapes takes ``time_scale``, which is the median
  over every decode shape when the profile has no block rows.
* **Dense decodes by batch size.** A profile's error is not flat over the batch: the 2026-12-06
  profile under-predicted 2-4-row dense decodes by 5-10% and not 12-24-row ones, and five probes
  in a row read its ratio falling with the rows (log-log slopes -0.03 to -0.08: 2 rows 6-17%
  above 24). One median then under-predicts runs of small batches (0.5x saturation: -5 to -10%
  TPOT in every validation) and over-predicts large ones (2x: +5 to +12%). So the dense-decode
  scale is a line in log rows through the median ratio of each row count
  (``time_scale_dense_decode`` at ``SLOPE_REF_ROWS``, ``time_scale_dense_decode_slope``),
  clamped to the probe's 2-24 rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from kvlab.calibrate.grid import design, measure
from kvlab.executor.cost_calibrated import SLOPE_REF_ROWS, CalibratedCostModel, clamp_rows, regime

# Decode groups of the sizes and contexts held-out runs spend their steps in (lone to 24
# sequences, uniform and uneven contexts: block-path and dense decodes), timed six times each: one
# pass over them takes ~1.5 s on SmolLM2, and within 30 s the machine's decode speed varies with an
# IQR of 10-19%, so a probe of three passes (the first design) read a moment rather than the level
# a run sees (the four decode probes around one held-out workload's three runs ranged 0.60-0.89).
DECODE_POINTS = ("decode1x32", "decode2x96", "decode4x256", "decode-uneven6", "decode12x256", "decode-uneven12",
                 "decode-uneven16", "decode24x32", "decode24x256", "decode24x640")
# Steps with a prompt chunk: a short and a long prompt, a later chunk, a mixed step, and the
# many-prompt step an offline batch starts with (4 s on SmolLM2, so two repeats).
PREFILL_POINTS = ("prefill96", "prefill320", "chunk128@512", "mixed8x200+prefill128", "prefill8x200")
PROBE_POINTS = DECODE_POINTS + PREFILL_POINTS


def probe(executor: Any, prof: Mapping[str, Any], decode_repeats: int = 6, prefill_repeats: int = 2) -> dict[str, Any]:
    """Time the probe shapes on ``executor`` and compare with ``prof``'s model; returns
    ``{"time_scale", "time_scale_dense_decode", "time_scale_prefill"}`` (median now/model of each
    regime's shapes, module docstring) and ``"points": {name: ratio}``. Raises ``ValueError`` if
    the model predicts no time for a shape (a profile whose coefficients are all zero there)."""
    model = CalibratedCostModel.from_profile(prof)
    grid = {p.name: p for p in design(quick=False) if p.block_size == 16}
    ratios: dict[str, float] = {}
    by_regime: dict[str, list[float]] = {}
    dense_rows: dict[float, list[float]] = {}
    for names, repeats in ((DECODE_POINTS, decode_repeats), (PREFILL_POINTS, prefill_repeats)):
        for m in measure(executor, [grid[n] for n in names], repeats, warmup=1):
            feats = m.point.features(model.block_rows)
            predicted = model.execute_time(feats)
            if not predicted > 0:
                raise ValueError(f"speed probe: the profile's model predicts {predicted} s for {m.point.name}")
            ratios[m.point.name] = m.median / predicted
            kind = regime(feats)
            by_regime.setdefault(kind, []).append(ratios[m.point.name])
            if kind == "dense_decode":
                dense_rows.setdefault(feats["decode_seqs"], []).append(ratios[m.point.name])
    base = statistics.median(by_regime.get("block") or [ratios[n] for n in DECODE_POINTS])
    dense, slope = rows_trend(dense_rows)
    return {"time_scale": base,
            "time_scale_dense_decode": dense or statistics.median(by_regime.get("dense_decode") or [base]),
            "time_scale_dense_decode_slope": slope,
            "time_scale_prefill": statistics.median(by_regime.get("dense_chunk") or [base]), "points": ratios}


def rows_trend(by_rows: Mapping[float, list[float]]) -> tuple[float | None, float]:
    """(scale at ``SLOPE_REF_ROWS``, slope) of ``ln ratio = ln scale + slope x ln(rows / ref)``,
    least squares through the median ratio of each row count (a noisy shape moves its group's
    median, not the line); (None, 0.0) with fewer than three row counts, where a slope would be
    noise. Rows are clamped to ``SLOPE_ROWS``. Pure."""
    groups: dict[float, list[float]] = {}
    for rows, rs in by_rows.items():
        groups.setdefault(clamp_rows(rows), []).extend(rs)
    if len(groups) < 3:
        return None, 0.0
    x = [math.log(r / SLOPE_REF_ROWS) for r in groups]
    y = [math.log(statistics.median(v)) for v in groups.values()]
    mx, my = statistics.fmean(x), statistics.fmean(y)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    slope = max(-1.0, min(1.0, slope))
    return math.exp(my - slope * mx), slope
