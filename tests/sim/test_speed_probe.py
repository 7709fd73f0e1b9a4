"""The speed probe: a machine that got slower (per regime) is measured as such, and the simulator scales."""

from __future__ import annotations

import dataclasses

import pytest

from kvlab.calibrate.probe import DECODE_POINTS, PREFILL_POINTS, probe
from kvlab.executor.cost_calibrated import FEATURE_NAMES, REGIMES, CalibratedCostModel, regime
from kvlab.hardware import HardwareProfile
from tests.sim.test_calibrate_fit import BLOCK_TRUE, TRUE, NoisyExecutor


def _profile(coef: dict[str, float], block_rows: int = 0) -> dict:
    """A profile as ``load_profile`` returns it, whose model is ``coef`` (no host terms)."""
    return {"coefficients": {k: {"value": v} for k, v in (dict.fromkeys(FEATURE_NAMES, 0.0) | coef).items()},
            "host_overhead": {"step": {"value": 0.0}, "seqs": {"value": 0.0}}, "block_rows": block_rows}


@pytest.mark.parametrize("block,dense,prefill", [(1.0, 1.0, 1.0), (1.3, 1.3, 1.3), (0.8, 1.2, 1.1), (1.2, 0.85, 0.9)])
def test_probe_recovers_each_regimes_change_of_speed(block: float, dense: float, prefill: float) -> None:
    now = NoisyExecutor(BLOCK_TRUE, sigma=0.02, spike_p=0.1, seed=2, block_rows=16)
    now.model = dataclasses.replace(now.model, time_scale=block, dense_decode_time_scale=dense,
                                    prefill_time_scale=prefill)
    out = probe(now, _profile(BLOCK_TRUE, block_rows=16))
    assert out["time_scale"] == pytest.approx(block, rel=0.04)
    assert out["time_scale_dense_decode"] == pytest.approx(dense, rel=0.04)
    assert out["time_scale_prefill"] == pytest.approx(prefill, rel=0.04)
    assert set(out["points"]) == set(DECODE_POINTS + PREFILL_POINTS)


def test_probe_without_block_rows_puts_every_decode_in_the_dense_regime() -> None:
    now = NoisyExecutor(TRUE, sigma=0.0, spike_p=0.0)
    now.model = dataclasses.replace(now.model, time_scale=1.2, prefill_time_scale=0.9)
    out = probe(now, _profile(TRUE))
    assert out["time_scale"] == pytest.approx(1.2) and out["time_scale_dense_decode"] == pytest.approx(1.2)
    assert out["time_scale_prefill"] == pytest.approx(0.9)


def test_probe_compares_with_the_model_so_a_biased_model_is_corrected() -> None:
    # the machine's decodes cost 15% more per sequence than the profile's model says: the probe's
    # decode scale rises above 1 (by less than 15%: the per-sequence term is part of each step)
    slower_seqs = TRUE | {"decode_seqs": 1.15 * TRUE["decode_seqs"], "decode_kv": 1.15 * TRUE["decode_kv"]}
    out = probe(NoisyExecutor(slower_seqs, sigma=0.0, spike_p=0.0), _profile(TRUE))
    assert 1.0 < out["time_scale"] < 1.15
    assert out["time_scale_prefill"] == pytest.approx(1.0, abs=0.02)


def test_probe_refuses_a_model_that_predicts_no_time() -> None:
    with pytest.raises(ValueError, match="predicts 0.0 s for"):
        probe(NoisyExecutor(TRUE), _profile({}))


def test_time_scale_multiplies_step_and_host_time() -> None:
    coef, host = dict.fromkeys(FEATURE_NAMES, 0.0) | TRUE, {"step": 1e-3, "seqs": 1e-5}
    base, slow = CalibratedCostModel(coef, host), CalibratedCostModel(coef, host, time_scale=1.25)
    feats = {"step": 1.0, "tokens": 7.0, "decode_seqs": 3.0}
    assert slow.execute_time(feats) == pytest.approx(1.25 * base.execute_time(feats))
    assert slow.host_time(5) == pytest.approx(1.25 * base.host_time(5))
    with pytest.raises(ValueError, match="time_scale must be > 0"):
        CalibratedCostModel(coef, host, time_scale=0.0)
    with pytest.raises(ValueError, match="prefill_time_scale must be > 0"):
        CalibratedCostModel(coef, host, prefill_time_scale=-1.0)
    with pytest.raises(ValueError, match="dense_decode_time_scale must be > 0"):
        CalibratedCostModel(coef, host, dense_decode_time_scale=0.0)


def test_each_regime_takes_its_own_scale() -> None:
    coef, host = dict.fromkeys(FEATURE_NAMES, 0.0) | BLOCK_TRUE, {"step": 1e-3, "seqs": 1e-5}
    base = CalibratedCostModel(coef, host, 16)
    three = CalibratedCostModel(coef, host, 16, time_scale=1.25, prefill_time_scale=0.8, dense_decode_time_scale=1.1)
    cases = {"block": ({"block_step": 1.0, "block_tokens": 3.0, "decode_seqs": 3.0}, 1.25),
             "dense_decode": ({"step": 1.0, "tokens": 20.0, "decode_seqs": 20.0}, 1.1),
             "dense_chunk": ({"step": 1.0, "tokens": 67.0, "chunks": 1.0}, 0.8)}
    for name, (feats, k) in cases.items():
        assert regime(feats) == name
        assert three.execute_time(feats) == pytest.approx(k * base.execute_time(feats)), name
    assert three.host_time(5) == pytest.approx(1.25 * base.host_time(5))  # host work: time_scale
    # unset regimes follow time_scale
    one = CalibratedCostModel(coef, host, 16, time_scale=1.25)
    assert all(one.execute_time(f) == pytest.approx(1.25 * base.execute_time(f)) for f, _ in cases.values())
    assert REGIMES == tuple(cases)


@pytest.mark.parametrize("key", ["time_scale", "time_scale_prefill", "time_scale_dense_decode"])
@pytest.mark.parametrize("bad", [0, -1.0, "fast", True])
def test_hardware_time_scales_must_be_positive_numbers(key: str, bad: object) -> None:
    with pytest.raises(ValueError, match=f"hardware.{key} must be a number > 0"):
        HardwareProfile.from_config({"name": "calibrated", "profile": "unused.json", key: bad})


def test_rows_trend_recovers_a_power_law_and_refuses_too_few_row_counts() -> None:
    from kvlab.calibrate.probe import rows_trend
    from kvlab.executor.cost_calibrated import SLOPE_REF_ROWS

    law = {r: [0.9 * (r / SLOPE_REF_ROWS) ** -0.05] for r in (2.0, 4.0, 6.0, 12.0, 16.0, 24.0)}
    scale, slope = rows_trend(law | {12.0: [law[12.0][0], 5.0, law[12.0][0]]})  # an outlier moves no median
    assert scale == pytest.approx(0.9) and slope == pytest.approx(-0.05)
    assert rows_trend({2.0: [1.1], 24.0: [0.9]}) == (None, 0.0)
    assert rows_trend({1.0: [1.1], 2.0: [1.0], 24.0: [0.9]}) == (None, 0.0)  # 1 row counts as 2: two groups


def test_dense_decode_scale_follows_the_batch_within_the_probed_rows() -> None:
    from kvlab.executor.cost_calibrated import SLOPE_REF_ROWS, SLOPE_ROWS

    coef, host = dict.fromkeys(FEATURE_NAMES, 0.0) | TRUE, {"step": 1e-3, "seqs": 1e-5}
    flat = CalibratedCostModel(coef, host, dense_decode_time_scale=0.9)
    tilted = CalibratedCostModel(coef, host, dense_decode_time_scale=0.9, dense_decode_scale_slope=-0.1)
    dec = {n: {"step": 1.0, "tokens": n, "decode_seqs": n} for n in (1, 2, 8, 24, 48)}
    for n, feats in dec.items():
        rows = min(max(n, SLOPE_ROWS[0]), SLOPE_ROWS[1])
        want = (rows / SLOPE_REF_ROWS) ** -0.1
        assert tilted.execute_time(feats) == pytest.approx(want * flat.execute_time(feats)), n
    assert tilted.execute_time(dec[48]) / flat.execute_time(dec[48]) == pytest.approx(
        tilted.execute_time(dec[24]) / flat.execute_time(dec[24]))  # clamped: no extrapolation
    chunk = {"step": 1.0, "tokens": 67.0, "chunks": 1.0}
    assert tilted.execute_time(chunk) == flat.execute_time(chunk)  # prefill steps keep their own scale


def test_probe_measures_a_model_error_that_grows_with_the_batch() -> None:
    # the machine's per-row decode cost is 30% above the profile's: the ratio now/model rises with
    # the rows, the probe's slope is positive, and the tilted model predicts both ends better than a flat one
    now_coef = TRUE | {"tokens": 1.3 * TRUE["tokens"], "logit_rows": 1.3 * TRUE["logit_rows"]}
    now = NoisyExecutor(now_coef, sigma=0.0, spike_p=0.0)
    out = probe(now, _profile(TRUE))
    assert out["time_scale_dense_decode_slope"] > 0.02
    flat = CalibratedCostModel.from_profile(_profile(TRUE), out | {"time_scale_dense_decode_slope": 0.0})
    tilted = CalibratedCostModel.from_profile(_profile(TRUE), out)
    for n in (2, 24):
        feats = {"step": 1.0, "tokens": n, "decode_seqs": n, "decode_kv": 64.0 * n, "head": 1.0, "logit_rows": n}
        truth = now.model.execute_time(feats)
        assert abs(tilted.execute_time(feats) - truth) < abs(flat.execute_time(feats) - truth), n


def test_hardware_config_checks_the_slope() -> None:
    from kvlab.calibrate.runs import compose
    for bad in ("2.0", "true"):
        with pytest.raises(ValueError, match="time_scale_dense_decode_slope must be a number in"):
            HardwareProfile.from_config(compose(["hardware=calibrated", "hardware.profile=x.json",
                                    f"hardware.time_scale_dense_decode_slope={bad}"])["hardware"])
