"""Paper-era multi-GPU term: derived from vLLM PR #2221's published Ray-vs-NCCL throughputs, its form
chosen on the held-out point, and applied only to tensor-parallel steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.executor.cost_model import CostModel
from kvlab.hardware import HardwareProfile
from kvlab.paperlib import era, era_tp
from kvlab.paperlib.era_fit import ERA
from tests.sim.conftest import load_yaml, shape

TP_JSON = era.ROOT / "tp_fit.json"
FIT, HELD = "sharegpt", "fixed_1031_317"


def _delta(name: str) -> float:
    p = era_tp.POINTS[name]
    return p["num_requests"] / p["before_req_s"] - p["num_requests"] / p["after_req_s"]


def test_yaml_holds_the_committed_derivation() -> None:
    out = json.loads(TP_JSON.read_text())
    assert out["points"] == era_tp.POINTS and out["engine"] == era_tp.ENGINE
    assert era_tp.yaml_values() == out["two_term"]
    again = era_tp.derive(out["totals"])  # the json is what derive() gives for its schedules
    assert again["two_term"] == out["two_term"] and again["forms"] == out["forms"]


def _totals(w_step: float, w_seq: float, steps: dict[str, float]) -> dict[str, dict[str, float]]:
    """Schedules in which N x (w_step + w_seq x n) per step explains each published delta exactly."""
    return {k: {"steps": s, "seq_steps": (_delta(k) / era_tp.WORKERS - w_step * s) / w_seq} for k, s in steps.items()}


def test_derive_recovers_known_two_term_constants() -> None:
    out = era_tp.derive(_totals(1.2e-3, 40e-6, {FIT: 2600.0, HELD: 800.0}))
    assert out["two_term"] == {"engine_per_worker_step_us": pytest.approx(1200.0, abs=0.06),
                               "engine_per_worker_seq_us": pytest.approx(40.0, abs=0.06)}


def test_one_term_forms_are_judged_on_the_held_out_point() -> None:
    """With no per-step cost in the data, the per-sequence form fitted on ShareGPT predicts the held-out
    point exactly and the per-step form does not."""
    tiny = 1e-12
    out = era_tp.derive(_totals(tiny, 40e-6, {FIT: 2600.0, HELD: 800.0}))
    assert out["forms"]["per_seq"]["us_per_worker"] == pytest.approx(40.0, abs=0.06)
    assert out["forms"]["per_seq"]["held_out_error_pct"] == pytest.approx(0.0, abs=1e-6)
    assert abs(out["forms"]["per_step"]["held_out_error_pct"]) > 5


@pytest.mark.parametrize("totals, word", [
    ({FIT: {"steps": 1000.0, "seq_steps": 1e5}, HELD: {"steps": 500.0, "seq_steps": 5e4}}, "proportional"),
    ({FIT: {"steps": 4000.0, "seq_steps": 3e5}, HELD: {"steps": 1000.0, "seq_steps": 1e5}}, "negative"),
])
def test_derive_refuses_what_two_points_cannot_say(totals: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        era_tp.derive(totals)


def test_worker_term_only_on_tensor_parallel_steps() -> None:
    hw = load_yaml("hardware", "a100-40gb")
    for model, tp in (("opt-13b", 1), ("opt-66b", 4), ("opt-175b", 8)):
        plain = CostModel(shape(model), HardwareProfile.from_config(hw), block_size=16)
        terms = {era_tp.YAML_KEYS["w_step"]: 1000.0, era_tp.YAML_KEYS["w_seq"]: 50.0}
        paper = CostModel(shape(model), HardwareProfile.from_config({**hw, **terms}), block_size=16)
        for n in (1, 40):
            args = (n, n * 300, n * 299, n * 19, n)
            added = paper.step_time(*args, num_seqs=n) - plain.step_time(*args, num_seqs=n)
            assert added == pytest.approx(0.0 if tp == 1 else tp * (1e-3 + n * 50e-6), abs=1e-12)


def test_the_schedule_does_not_depend_on_step_time() -> None:
    """The derivation counts steps on the roofline: with every request at t=0 the paper-era costs
    (and the term itself) leave the schedule unchanged."""
    small = ["workload=sharegpt", "workload.num_requests=120", "workload.max_prompt_len=1023",
             "workload.max_total_len=2047"]
    assert era_tp.schedule_totals(small) == era_tp.schedule_totals([*small, ERA])


def test_run_writes_the_derivation(tmp_path: Path) -> None:
    fake = {FIT: {"steps": 2000.0, "seq_steps": 3e5}, HELD: {"steps": 800.0, "seq_steps": 1.6e5}}
    out = era_tp.run(tmp_path, totals_of=lambda ov: fake[FIT if "workload=sharegpt" in ov else HELD],
                     predict=lambda ov, ray: 2.0 if ray else 4.0)
    written = json.loads((tmp_path / "tp_fit.json").read_text())
    assert written["forms"] == out["forms"] and written["two_term"] == out["two_term"]
    check = written["era_check"]
    assert set(check) == {f"{k}/{w}" for k in era_tp.POINTS for w in ("after", "before")}
    assert check[f"{FIT}/after"]["error_pct"] == pytest.approx(100 * (4.0 / 5.08 - 1))
    assert check[f"{HELD}/before"]["error_pct"] == pytest.approx(100 * (2.0 / 2.48 - 1))
    assert out["totals"] == fake


def test_the_command_reproduces_the_committed_derivation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m kvlab.paperlib.era_tp`` re-simulates both schedules: a change to the scheduler or the
    KV pool that moves them shows up here as a mismatch with the committed constants."""
    from kvlab import debug

    monkeypatch.setattr(era, "ROOT", tmp_path)
    # ~20k steps on a 29k-block pool: check the allocator's invariants every 50th step, not every one
    monkeypatch.setattr(debug, "CHECK_INVARIANTS", 50)
    assert era_tp.main([]) == 0
    fresh = json.loads((tmp_path / "tp_fit.json").read_text())
    committed = json.loads(TP_JSON.read_text())
    assert fresh["totals"] == committed["totals"] and fresh["two_term"] == committed["two_term"]
    for key, c in committed["era_check"].items():
        assert fresh["era_check"][key]["predicted_req_s"] == pytest.approx(c["predicted_req_s"], rel=1e-9)
    out = capsys.readouterr().out
    assert all(f"{k}: {v}" in out for k, v in committed["two_term"].items()) and out.rstrip().endswith("tp_fit.json")
