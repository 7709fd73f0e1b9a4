"""The speed probe: a machine that got uniformly slower is measured as such, and the simulator scales."""

from __future__ import annotations

import pytest

from kvlab.calibrate.grid import design, measure
from kvlab.calibrate.probe import PROBE_POINTS, probe
from kvlab.executor.cost_calibrated import FEATURE_NAMES, CalibratedCostModel
from kvlab.hardware import HardwareProfile
from tests.sim.test_calibrate_fit import TRUE, NoisyExecutor


def _profile(executor: NoisyExecutor) -> dict:
    """A profile's ``fit.residuals`` as calibrate writes them, measured on ``executor``."""
    measured = measure(executor, design(quick=False), repeats=3, warmup=1)
    return {"fit": {"residuals": [{"point": m.point.name, "block_size": m.point.block_size,
                                   "measured_s": m.median} for m in measured]}}


@pytest.mark.parametrize("slower", [1.0, 1.3, 0.8])
def test_probe_recovers_a_uniform_change_of_speed(slower: float) -> None:
    prof = _profile(NoisyExecutor(TRUE, sigma=0.02, spike_p=0.0, seed=1))
    now = NoisyExecutor({k: slower * v for k, v in TRUE.items()}, sigma=0.02, spike_p=0.1, seed=2)
    out = probe(now, prof, repeats=3)
    assert out["time_scale"] == pytest.approx(slower, rel=0.04)
    assert set(out["points"]) == set(PROBE_POINTS)


def test_probe_refuses_a_profile_without_its_points() -> None:
    with pytest.raises(ValueError, match="measured none of"):
        probe(NoisyExecutor(TRUE), {"fit": {"residuals": [{"point": "x", "block_size": 16, "measured_s": 1.0}]}})


def test_time_scale_multiplies_step_and_host_time() -> None:
    coef, host = dict.fromkeys(FEATURE_NAMES, 0.0) | TRUE, {"step": 1e-3, "seqs": 1e-5}
    base, slow = CalibratedCostModel(coef, host), CalibratedCostModel(coef, host, time_scale=1.25)
    feats = {"step": 1.0, "tokens": 7.0, "decode_seqs": 3.0}
    assert slow.execute_time(feats) == pytest.approx(1.25 * base.execute_time(feats))
    assert slow.host_time(5) == pytest.approx(1.25 * base.host_time(5))
    with pytest.raises(ValueError, match="time_scale must be > 0"):
        CalibratedCostModel(coef, host, time_scale=0.0)


@pytest.mark.parametrize("bad", [0, -1.0, "fast", True])
def test_hardware_time_scale_must_be_a_positive_number(bad: object) -> None:
    with pytest.raises(ValueError, match="hardware.time_scale must be a number > 0"):
        HardwareProfile.from_config({"name": "calibrated", "profile": "unused.json", "time_scale": bad})
