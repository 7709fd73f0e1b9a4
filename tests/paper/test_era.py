"""Paper-era mode: one constant fitted on one point, its provenance, and how the cost model uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.executor.cost_model import CostModel
from kvlab.hardware import HardwareProfile
from kvlab.paperlib import era, era_fit
from tests.sim.conftest import load_yaml, shape

FIT_JSON = era.ROOT / "fit.json"


def test_yaml_constants_are_the_committed_fit() -> None:
    """The era yaml holds exactly what the committed fit derived: k x kvlab's measured host costs."""
    fitted = json.loads(FIT_JSON.read_text())
    assert era_fit.yaml_terms() == {"engine_step_overhead_us": fitted["engine_step_overhead_us"],
                                    "engine_per_seq_us": fitted["engine_per_seq_us"]}
    assert era_fit.host_terms(fitted["k"], fitted["host_base"]) == era_fit.yaml_terms()
    # The base is the committed calibration profile's measured host overhead, not a free number.
    base = era_fit.host_base()
    assert fitted["host_base"]["step_us"] == pytest.approx(base["step_us"])
    assert fitted["host_base"]["seq_us"] == pytest.approx(base["seq_us"])
    assert fitted["fit_point"] == era_fit.FIT_POINT
    # The fit stopped where the point's normalized latency met the published value.
    last = fitted["tried"][-1]
    assert last["normalized_latency"] == pytest.approx(era_fit.FIT_POINT["normalized_latency"], abs=5e-4)


def test_fit_recovers_a_known_scale(tmp_path: Path) -> None:
    """Bisection on a synthetic monotone latency recovers the k that produces the target."""
    base = {"step_us": 400.0, "seq_us": 20.0}
    batch = 13.0

    def measure(terms: dict[str, float], n: int) -> float:
        host_s = 1e-6 * (terms["engine_step_overhead_us"] + batch * terms["engine_per_seq_us"])
        return 0.02 + 3.0 * host_s  # 20 ms of GPU work per token, host time counted three times

    out = era_fit.fit(tmp_path, base=base, measure=measure, tol=1e-6, log=lambda *_: None)
    true_k = (era_fit.FIT_POINT["normalized_latency"] - 0.02) / 3.0 / (1e-6 * (400 + batch * 20))
    assert out["k"] == pytest.approx(true_k, rel=1e-3)
    assert json.loads((tmp_path / "fit.json").read_text())["k"] == out["k"]
    assert out["engine_per_seq_us"] == pytest.approx(true_k * 20, rel=1e-3)


def test_host_terms_enter_every_step() -> None:
    """The era yaml adds k x (host_step + host_seq x n) to a step of n sequences, nothing else."""
    hw = load_yaml("hardware", "a100-40gb")
    terms = era_fit.yaml_terms()
    plain = CostModel(shape("opt-13b"), HardwareProfile.from_config(hw), block_size=16)
    paper = CostModel(shape("opt-13b"), HardwareProfile.from_config({**hw, **terms}), block_size=16)
    for n in (1, 32, 160):
        args = (n, n * 300, n * 299, n * 19, n)
        added = paper.step_time(*args, num_seqs=n) - plain.step_time(*args, num_seqs=n)
        want = 1e-6 * (terms["engine_step_overhead_us"] + n * terms["engine_per_seq_us"])
        assert added == pytest.approx(want, rel=1e-9)


def test_report_section_names_the_fit_and_counts_misses() -> None:
    text = "\n".join(era.section())
    fitted = json.loads(FIT_JSON.read_text())
    assert f"{fitted['k']:.2f}" in text and "ONE published point" in text
    assert "of 30" in text and "NOT met" in text


def test_era_run_predicts_panel_a_end_to_end(tmp_path: Path) -> None:
    """``era.run`` on one panel: every system gets a finite capacity in the paper's order, and the
    table carries the paper's value and the error beside it."""
    table = era.run(tmp_path / "era2023", n_jobs=1, resume=False, panels="a", num_requests=120,
                    readings=("paper_trace",))
    assert (tmp_path / "era2023" / "points.csv").exists() and (tmp_path / "era2023" / "fig12_capacity.csv").exists()
    cap = dict(zip(table["system"], table["era_capacity"]))
    assert set(cap) == {"ft", "orca_max", "orca_pow2", "orca_oracle", "vllm"}
    assert cap["ft"] < cap["orca_max"] < cap["orca_pow2"] < cap["orca_oracle"] < cap["vllm"], cap
    assert table["paper"].notna().all() and table["era_error_pct"].notna().all()


def test_committed_tp_capacities_reproduce(tmp_path: Path) -> None:
    """The committed paper-era table is what the code and the yaml give today: panel (b)'s Orca (Max)
    row (OPT-66B on 4 GPUs: every multi-GPU term is in play) rerun in full -- X, the walk and the
    bisections on one-hour traces (vLLM's row, ~3,000 requests a point, would add about two minutes;
    the walk's rule itself is tested on a stand-in in test_era_crossing.py)."""
    import pandas as pd

    from kvlab.paperlib.runner import _execute

    systems = ("orca_max",)
    jobs = [j for j in era.jobs("b") if j.system in systems]
    rows = pd.DataFrame(_execute(jobs, tmp_path, 1, False, "era check"))
    fresh = era.capacity_table(rows, None).set_index("system")
    committed = pd.read_csv(era.ROOT / "fig12_capacity.csv").query("panel == 'b'").set_index("system")
    for system in systems:
        assert fresh.loc[system, "era_capacity"] == pytest.approx(committed.loc[system, "era_capacity"],
                                                                  rel=1e-3), system
        assert fresh.loc[system, "capacity_over_x"] == pytest.approx(committed.loc[system, "capacity_over_x"],
                                                                     rel=1e-3), system
