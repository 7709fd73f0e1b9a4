"""The calibration fit recovers known constants from a synthetic executor with noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kvlab.calibrate.fit import fit_relative, nnls
from kvlab.calibrate.grid import design, measure
from kvlab.calibrate.overhead import fit_host
from kvlab.executor.base import StepInput, StepOutput
from kvlab.executor.cost_calibrated import FEATURE_NAMES, CalibratedCostModel, step_features

# A made-up machine: every term matters somewhere on the grid (seconds per unit).
TRUE = {"step": 20e-3, "decode_seqs": 0.3e-3, "chunks": 2e-3, "tokens": 1.5e-3, "decode_kv": 4e-6,
        "decode_pad": 3e-6, "chunk_kv": 2e-6, "causal_pairs": 0.5e-6, "masked_pairs": 1e-6, "head": 4e-3,
        "logit_rows": 1e-3}
# ... and one whose small steps read GGUF blocks (kvlab.models.block_linear): cheaper fixed cost
BLOCK_TRUE = {**TRUE, "block_step": 8e-3, "block_tokens": 2.5e-3, "block_multirow": 6e-3, "block_head": 1e-3,
              "block_logit_rows": 0.4e-3}


class NoisyExecutor:
    """Step time = the true linear model x lognormal noise; occasional 3x spikes (a busy machine)."""

    def __init__(self, coef: dict[str, float], sigma: float = 0.03, spike_p: float = 0.05, seed: int = 0,
                 block_rows: int = 0) -> None:
        self.model = CalibratedCostModel(dict.fromkeys(FEATURE_NAMES, 0.0) | coef, {}, block_rows)
        self.rng = np.random.default_rng(seed)
        self.sigma, self.spike_p = sigma, spike_p
        self.block_sizes: list[int] = []

    def init_cache(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        self.block_sizes.append(block_size)

    def execute(self, step: StepInput) -> StepOutput:
        t = self.model.execute_time(step_features(step.seqs, self.model.block_rows))
        t *= float(self.rng.lognormal(0, self.sigma))
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


@pytest.mark.parametrize("true,block_rows", [(TRUE, 0), (BLOCK_TRUE, 16)], ids=["dense", "gguf-blocks"])
def test_fit_recovers_constants_from_noisy_synthetic_executor(true: dict[str, float], block_rows: int) -> None:
    ex = NoisyExecutor(true, block_rows=block_rows)
    points = design(quick=False)
    measured = measure(ex, points, repeats=5, warmup=1)
    assert sorted(set(ex.block_sizes)) == [16, 32]  # the grid varies the block size
    feats = [m.point.features(block_rows) for m in measured]
    fit = fit_relative(feats, [m.median for m in measured], FEATURE_NAMES)
    true_t = [ex.model.execute_time(f) for f in feats]
    for k, v in true.items():
        # where the term weighs most, the fitted term is within 8% of the step's time ...
        i = int(np.argmax([v * f[k] / t for f, t in zip(feats, true_t)]))
        share = v * feats[i][k] / true_t[i]
        assert abs(fit.coef[k] - v) * feats[i][k] / true_t[i] < 0.08, (k, fit.coef[k], v)
        # ... and a term that is a fifth of some step or more is recovered to 15% of its value
        if share > 0.2:
            assert fit.coef[k] == pytest.approx(v, rel=0.15), k
    assert fit.rms_rel_error < 0.05


@pytest.mark.parametrize("absent,point", [("masked_pairs", "chunk256@768"), ("decode_pad", "decode-uneven16")])
def test_fit_keeps_an_absent_term_at_zero(absent: str, point: str) -> None:
    # e.g. decode_pad: an executor that attends decodes in place pays nothing for padding
    coef = dict.fromkeys(FEATURE_NAMES, 0.0) | dict(TRUE, **{absent: 0.0})
    measured = measure(NoisyExecutor(coef, spike_p=0.0), design(quick=False), repeats=3)
    fit = fit_relative([m.point.features() for m in measured], [m.median for m in measured], FEATURE_NAMES)
    assert all(v >= 0 for v in fit.coef.values())
    # its contribution on the point where that term is largest is negligible
    f = next(m.point.features() for m in measured if m.point.name == point)
    assert f[absent] > 0
    assert fit.coef[absent] * f[absent] < 0.05 * CalibratedCostModel(coef, {}).execute_time(f)


def test_block_path_features_split_by_rows() -> None:
    from kvlab.executor.base import ScheduledSeq
    from kvlab.request import SamplingParams

    sp = SamplingParams(max_tokens=4)
    decodes = [ScheduledSeq(i, str(i), [1], 20, [i], 1, sp) for i in range(4)]
    f = step_features(decodes, block_rows=4)
    assert (f["block_step"], f["block_tokens"], f["block_multirow"], f["block_head"], f["block_logit_rows"]) == (
        1, 4, 1, 1, 4)
    assert f["step"] == f["tokens"] == f["head"] == f["logit_rows"] == 0
    # a lone decode takes the block kernel's 1-row path: no multi-row term
    f = step_features(decodes[:1], block_rows=4)
    assert (f["block_step"], f["block_tokens"], f["block_multirow"]) == (1, 1, 0)
    f = step_features([*decodes, ScheduledSeq(9, "p", [1] * 30, 0, [9, 10], 1, sp)], block_rows=8)
    assert (f["step"], f["tokens"], f["block_head"], f["block_logit_rows"]) == (1, 34, 1, 5)  # head on blocks
    f = step_features(decodes, block_rows=0)
    assert (f["step"], f["tokens"], f["head"], f["logit_rows"], f["block_step"], f["block_multirow"]) == (
        1, 4, 1, 4, 0, 0)


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


def test_step_features_count_the_work_of_a_mixed_step() -> None:
    from kvlab.executor.base import ScheduledSeq
    from kvlab.request import SamplingParams

    sp = SamplingParams(max_tokens=4)
    seqs = [ScheduledSeq(0, "a", [1], 9, [0], 1, sp), ScheduledSeq(1, "b", [1], 29, [1, 2], 1, sp),
            ScheduledSeq(2, "c", [1] * 6, 0, [3], 1, sp), ScheduledSeq(3, "d", [1] * 4, 12, [4], 0, sp)]
    f = step_features(seqs)
    assert f["decode_seqs"] == 2 and f["chunks"] == 2 and f["tokens"] == 12 and f["logit_rows"] == 3
    assert f["decode_kv"] == 10 + 30  # each decode's context, its new token included
    assert f["decode_pad"] == 2 * 30 - 40  # padded to the longest decode
    assert f["chunk_kv"] == 6 + 16 and f["causal_pairs"] == 21 and f["masked_pairs"] == 4 * 16
    # the grid's steps scatter every sequence's blocks over the pool, and never share one
    from kvlab.calibrate.grid import design

    for p in design(quick=False):
        tables = [b for s in p.step(sp).seqs for b in s.block_table]
        assert len(set(tables)) == len(tables) == p.blocks_needed()
    big = next(p for p in design(quick=False) if p.name == "decode-uneven16").step(sp).seqs[0].block_table
    assert big != list(range(big[0], big[0] + len(big)))


class DriftingExecutor(NoisyExecutor):
    """A noiseless machine whose speed drifts: the n-th step takes (1 + slope x n) x the true time."""

    def __init__(self, slope: float) -> None:
        super().__init__(TRUE, sigma=0.0, spike_p=0.0)
        self.slope, self.calls = slope, 0

    def execute(self, step: StepInput) -> StepOutput:
        self.calls += 1
        out = super().execute(step)
        return StepOutput({}, out.duration_s * (1 + self.slope * self.calls))


@pytest.mark.parametrize("slope", [1e-3, -1e-3])
def test_grid_measured_around_the_real_runs_reads_their_speed(slope: float) -> None:
    """The grid's repeats bracket what runs between them (the real calibration runs), so a
    machine that drifts steadily is read at the speed it had during them; a grid measured only
    before them is off by the drift."""
    from kvlab.calibrate.grid import measure_around

    points = [p for p in design(quick=True) if p.block_size == 16]
    ex = DriftingExecutor(slope)

    def real_runs_on(ex: DriftingExecutor) -> Callable[[], float]:
        def run() -> float:  # as many steps as two grid passes, at the drifting speed
            start = ex.calls
            ex.calls += 2 * len(points)
            return 1 + slope * (start + ex.calls) / 2
        return run

    measured, speed_during = measure_around(ex, points, 4, real_runs_on(ex), warmup=1)
    assert all(len(m.times) == 4 for m in measured)
    true = {p.name: CalibratedCostModel(dict.fromkeys(FEATURE_NAMES, 0.0) | TRUE, {}).execute_time(
        p.features(0)) for p in points}
    ratios = [m.median / true[m.point.name] for m in measured]
    assert np.median(ratios) == pytest.approx(speed_during, rel=0.01)
    # the same grid, all before the real runs
    ex2 = DriftingExecutor(slope)
    before_only = [m.median / true[m.point.name] for m in measure(ex2, points, 4, warmup=1)]
    speed_during2 = real_runs_on(ex2)()
    assert abs(np.median(before_only) - speed_during2) > 3 * abs(np.median(ratios) - speed_during)
