"""The calibration fit recovers known constants from a synthetic executor with noise."""

from __future__ import annotations

import numpy as np
import pytest

from kvlab.calibrate.fit import fit_relative, nnls
from kvlab.calibrate.grid import design, measure
from kvlab.calibrate.overhead import fit_host
from kvlab.executor.base import StepInput, StepOutput
from kvlab.executor.cost_calibrated import FEATURE_NAMES, CalibratedCostModel, step_features

# A made-up machine: every term matters somewhere on the grid (seconds per unit).
TRUE = {"step": 20e-3, "decode_seqs": 0.3e-3, "chunks": 2e-3, "tokens": 1.5e-3, "decode_kv": 4e-6,
        "chunk_kv": 2e-6, "causal_pairs": 0.5e-6, "masked_pairs": 1e-6, "logit_rows": 1e-3}


class NoisyExecutor:
    """Step time = the true linear model x lognormal noise; occasional 3x spikes (a busy machine)."""

    def __init__(self, coef: dict[str, float], sigma: float = 0.03, spike_p: float = 0.05, seed: int = 0) -> None:
        self.model = CalibratedCostModel(coef, {})
        self.rng = np.random.default_rng(seed)
        self.sigma, self.spike_p = sigma, spike_p
        self.block_sizes: list[int] = []

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        self.block_sizes.append(block_size)

    def execute(self, step: StepInput) -> StepOutput:
        t = self.model.execute_time(step_features(step.seqs)) * float(self.rng.lognormal(0, self.sigma))
        if self.rng.random() < self.spike_p:
            t *= 3.0
        return StepOutput({}, t)


def test_nnls_matches_a_known_solution() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((40, 5))
    x_true = np.array([1.0, 0.0, 2.0, 0.5, 0.0])
    x = nnls(a, a @ x_true)
    assert np.allclose(x, x_true, atol=1e-8)
    # an unconstrained solution with a negative entry is clipped to the boundary, still optimal
    b = a @ np.array([1.0, -1.0, 0, 0, 0])
    x = nnls(a, b)
    assert (x >= 0).all() and x[1] == 0.0


def test_fit_recovers_constants_from_noisy_synthetic_executor() -> None:
    ex = NoisyExecutor(TRUE)
    points = design(quick=False)
    measured = measure(ex, points, repeats=5, warmup=1)
    assert sorted(set(ex.block_sizes)) == [16, 32]  # the grid varies the block size
    feats = [m.point.features() for m in measured]
    fit = fit_relative(feats, [m.median for m in measured], FEATURE_NAMES)
    true_t = [CalibratedCostModel(TRUE, {}).execute_time(f) for f in feats]
    for k, v in TRUE.items():
        # where the term weighs most, the fitted term is within 8% of the step's time ...
        i = int(np.argmax([v * f[k] / t for f, t in zip(feats, true_t)]))
        share = v * feats[i][k] / true_t[i]
        assert abs(fit.coef[k] - v) * feats[i][k] / true_t[i] < 0.08, (k, fit.coef[k], v)
        # ... and a term that is a fifth of some step or more is recovered to 15% of its value
        if share > 0.2:
            assert fit.coef[k] == pytest.approx(v, rel=0.15), k
    assert fit.rms_rel_error < 0.05


def test_fit_keeps_an_absent_term_at_zero() -> None:
    coef = dict(TRUE, masked_pairs=0.0)
    measured = measure(NoisyExecutor(coef, spike_p=0.0), design(quick=False), repeats=3)
    fit = fit_relative([m.point.features() for m in measured], [m.median for m in measured], FEATURE_NAMES)
    assert all(v >= 0 for v in fit.coef.values())
    # its contribution on the chunk point that has masked pairs is negligible
    f = next(m.point.features() for m in measured if m.point.name == "chunk256@768")
    assert fit.coef["masked_pairs"] * f["masked_pairs"] < 0.05 * CalibratedCostModel(coef, {}).execute_time(f)


def test_host_overhead_fit_is_robust_to_spikes() -> None:
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(400):
        n = int(rng.integers(1, 20))
        g = 1e-3 + 50e-6 * n + rng.normal(0, 20e-6)
        gaps.append((n, g * (10 if rng.random() < 0.05 else 1)))
    h = fit_host(gaps)
    assert h["step"] == pytest.approx(1e-3, rel=0.1)
    assert h["seqs"] == pytest.approx(50e-6, rel=0.1)
