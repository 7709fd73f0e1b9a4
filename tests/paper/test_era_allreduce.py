"""Paper-era all-reduce term: derived from vLLM PR #2192's published latencies, and applied per
all-reduce only to tensor-parallel steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.executor.cost_model import CostModel
from kvlab.hardware import HardwareProfile
from kvlab.paperlib import era, era_allreduce
from tests.sim.conftest import load_yaml, shape

FIT_JSON = era.ROOT / "allreduce_fit.json"


def test_yaml_holds_the_committed_derivation() -> None:
    out = json.loads(FIT_JSON.read_text())
    assert out == era_allreduce.derive()
    assert era_allreduce.yaml_value() == out[era_allreduce.YAML_KEY]


def test_the_published_rows_give_their_per_call_savings() -> None:
    """Hand arithmetic on the PR's two A100 rows: 1.80 s over 255 decode steps x 161 calls; 1.50 s
    over 255 x 121."""
    out = era_allreduce.derive()
    assert out["per_call_saving_us"] == {"llama-70b_a100-80g_tp4_bs64": pytest.approx(1.80e6 / (255 * 161), abs=0.01),
                                         "llama-33b_a100-80g_tp2_bs64": pytest.approx(1.50e6 / (255 * 121), abs=0.01)}
    assert 43 < out[era_allreduce.YAML_KEY] < 49 and out["range_us"] == sorted(out["per_call_saving_us"].values())


def test_derive_recovers_a_known_per_call_cost() -> None:
    """Rows synthesized from 30 µs per call (any model size, TP, output length) give 30 µs back."""
    rows = {}
    for name, layers, out_len in (("x", 40, 128), ("y", 96, 512)):
        calls = (out_len - 1) * (2 * layers + 1)
        rows[name] = {"layers": layers, "tp": 2, "batch": 8, "input_len": 32, "output_len": out_len,
                      "before_s": 5.0 + calls * 30e-6, "after_s": 5.0}
    assert era_allreduce.derive(rows)[era_allreduce.YAML_KEY] == pytest.approx(30.0, abs=0.05)


def test_derive_refuses_a_row_that_got_no_faster() -> None:
    row = {**era_allreduce.ROWS["llama-33b_a100-80g_tp2_bs64"], "after_s": 16.0}
    with pytest.raises(ValueError, match="did not fall"):
        era_allreduce.derive({"r": row})


def test_engine_allreduce_only_on_tensor_parallel_steps() -> None:
    """The term adds 2 x layers x a to every step when TP >= 2, whatever the batch, and nothing on one GPU."""
    hw = load_yaml("hardware", "a100-40gb")
    for model, tp in (("opt-13b", 1), ("opt-66b", 4), ("opt-175b", 8)):
        s = shape(model)
        plain = CostModel(s, HardwareProfile.from_config(hw), block_size=16)
        paper = CostModel(s, HardwareProfile.from_config({**hw, era_allreduce.YAML_KEY: 46.2}), block_size=16)
        for n in (1, 40):
            args = (n, n * 300, n * 299, n * 19, n)
            added = paper.step_time(*args, num_seqs=n) - plain.step_time(*args, num_seqs=n)
            assert added == pytest.approx(0.0 if tp == 1 else 2 * s.num_layers * 46.2e-6, abs=1e-12)


def test_the_command_writes_the_derivation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(era, "ROOT", tmp_path)
    assert era_allreduce.main([]) == 0
    written = json.loads((tmp_path / "allreduce_fit.json").read_text())
    assert written == json.loads(FIT_JSON.read_text())
    out = capsys.readouterr().out
    assert f"{era_allreduce.YAML_KEY}: {written[era_allreduce.YAML_KEY]}" in out
    assert out.rstrip().endswith("allreduce_fit.json")
