"""Paper-era multi-GPU term: derived from vLLM PR #2221's published Ray-vs-NCCL throughputs with the
measured payload shape of each engine, and applied only to tensor-parallel steps."""

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
    again = era_tp.derive(out["totals"])  # the json is what derive() gives for its schedules and payload fit
    assert again["two_term"] == out["two_term"] and again["forms"] == out["forms"]
    assert again["constant_seq"] == out["constant_seq"]
    payload = era_tp.load_payload()["layouts"]
    assert out["payload_fit"] == {k: payload[k]["fit"] for k in ("v0.2.6", "cacheflow_2023")}


# a payload shape: 6 µs per sequence + 30 ns per int (v0.2.6 and the paper's engine alike here)
SHAPE = {"seq_us": 6.0, "int_us": 0.03}
PAYLOAD = {"layouts": {"v0.2.6": {"fit": SHAPE}, "cacheflow_2023": {"fit": {"seq_us": 3.0, "int_us": 0.03}}}}


def _payload_totals(w_step: float, scale: float, steps: dict[str, float],
                    ctx: dict[str, float]) -> dict[str, dict[str, float]]:
    """Schedules (mean context ``ctx`` per sequence) in which N x (w_step + scale x payload) per step
    explains each published delta exactly."""
    out = {}
    for k, s in steps.items():
        per_seq = 1e-6 * (SHAPE["seq_us"] + SHAPE["int_us"] * (ctx[k] * (1 + 1 / 16) + 1))
        n = (_delta(k) / era_tp.WORKERS - w_step * s) / (scale * per_seq)
        out[k] = {"steps": s, "seq_steps": n, "context_tokens": ctx[k] * n}
    return out


def test_derive_recovers_known_step_cost_and_payload_scale() -> None:
    out = era_tp.derive(_payload_totals(3e-3, 0.5, {FIT: 2600.0, HELD: 800.0}, {FIT: 400.0, HELD: 1200.0}),
                        PAYLOAD)
    assert out["payload_scale"] == pytest.approx(0.5, abs=1e-4)
    assert out["two_term"] == {"engine_per_worker_step_us": pytest.approx(3000.0, abs=0.06),
                               "engine_per_worker_seq_us": pytest.approx(0.5 * 3.0, abs=0.006),
                               "engine_per_worker_int_us": pytest.approx(0.5 * 0.03, abs=1e-4)}


def test_equal_contexts_reduce_to_the_constant_per_sequence_form() -> None:
    """With the same mean context at both points the payload per sequence is a constant, so the
    payload form and the constant-per-sequence form agree on w_step; with the committed schedules
    (ShareGPT ~420 tokens, the fixed workload ~1190) the longer held-out contexts explain more of
    its cost per sequence, and more of the cost is left per step."""
    committed = json.loads(TP_JSON.read_text())["totals"]
    same = {k: {**v, "context_tokens": 500.0 * v["seq_steps"]} for k, v in committed.items()}
    out = era_tp.derive(same, PAYLOAD)
    assert out["two_term"]["engine_per_worker_step_us"] == pytest.approx(
        out["constant_seq"]["engine_per_worker_step_us"], abs=0.2)
    out = era_tp.derive(committed, PAYLOAD)
    assert out["two_term"]["engine_per_worker_step_us"] > 2 * out["constant_seq"]["engine_per_worker_step_us"]


def test_one_term_forms_are_judged_on_the_held_out_point() -> None:
    """With no per-step cost in the data, the per-sequence form fitted on ShareGPT predicts the held-out
    point exactly and the per-step form does not."""
    totals = {k: {"steps": s, "seq_steps": _delta(k) / era_tp.WORKERS / 40e-6, "context_tokens": 1e6}
              for k, s in ((FIT, 2600.0), (HELD, 800.0))}
    totals[HELD]["context_tokens"] = 5e7  # keep the payload form solvable (non-proportional points)
    out = era_tp.derive(totals, PAYLOAD)
    assert out["forms"]["per_seq"]["us_per_worker"] == pytest.approx(40.0, abs=0.06)
    assert out["forms"]["per_seq"]["held_out_error_pct"] == pytest.approx(0.0, abs=1e-6)
    assert abs(out["forms"]["per_step"]["held_out_error_pct"]) > 5


@pytest.mark.parametrize("totals, word", [
    ({FIT: {"steps": 1000.0, "seq_steps": 1e5, "context_tokens": 4e7},
      HELD: {"steps": 500.0, "seq_steps": 5e4, "context_tokens": 2e7}}, "proportional"),
    ({FIT: {"steps": 4000.0, "seq_steps": 1e4, "context_tokens": 1e6},
      HELD: {"steps": 2000.0, "seq_steps": 1e5, "context_tokens": 1e8}}, "negative"),
])
def test_derive_refuses_what_two_points_cannot_say(totals: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        era_tp.derive(totals, PAYLOAD)


def test_worker_term_only_on_tensor_parallel_steps() -> None:
    hw = load_yaml("hardware", "a100-40gb")
    for model, tp in (("opt-13b", 1), ("opt-66b", 4), ("opt-175b", 8)):
        plain = CostModel(shape(model), HardwareProfile.from_config(hw), block_size=16)
        terms = {era_tp.YAML_KEYS["w_step"]: 1000.0, era_tp.YAML_KEYS["w_seq"]: 50.0, era_tp.YAML_KEYS["w_int"]: 0.5}
        paper = CostModel(shape(model), HardwareProfile.from_config({**hw, **terms}), block_size=16)
        for n in (1, 40):
            args = (n, n * 300, n * 299, n * 19, n)  # n new tokens, n x 19 block-table entries
            added = paper.step_time(*args, num_seqs=n) - plain.step_time(*args, num_seqs=n)
            want = 0.0 if tp == 1 else tp * (1e-3 + n * 50e-6 + (n + n * 19) * 0.5e-6)
            assert added == pytest.approx(want, abs=1e-12)


def test_the_schedule_does_not_depend_on_step_time() -> None:
    """The derivation counts steps on the roofline: with every request at t=0 the paper-era costs
    (and the term itself) leave the schedule unchanged."""
    small = ["workload=sharegpt", "workload.num_requests=120", "workload.max_prompt_len=1023",
             "workload.max_total_len=2047"]
    assert era_tp.schedule_totals(small) == era_tp.schedule_totals([*small, ERA])


def test_run_writes_the_derivation(tmp_path: Path) -> None:
    fake = {FIT: {"steps": 2000.0, "seq_steps": 3e5, "context_tokens": 1.2e8},
            HELD: {"steps": 800.0, "seq_steps": 1.6e5, "context_tokens": 1.9e8}}
    out = era_tp.run(tmp_path, totals_of=lambda ov: fake[FIT if "workload=sharegpt" in ov else HELD],
                     predict=lambda ov: 4.0)
    written = json.loads((tmp_path / "tp_fit.json").read_text())
    assert written["forms"] == out["forms"] and written["two_term"] == out["two_term"]
    check = written["era_check"]
    assert set(check) == {f"{k}/after" for k in era_tp.POINTS}
    assert check[f"{FIT}/after"]["error_pct"] == pytest.approx(100 * (4.0 / 5.08 - 1))
    assert check[f"{HELD}/after"]["error_pct"] == pytest.approx(100 * (4.0 / 3.48 - 1))
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
