"""``best=`` picks among KV formats: from a Hydra sweep over ``kv_quant`` and from a kvlab.quant results dir."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kvlab.server.best import best_overrides, pick_best


def _job(root: Path, name: str, scheme: str, tput: float) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {"allocator": {"name": "paged", "block_size": 16}, "scheduler": {"name": "fcfs"},
           "kv_quant": {"name": scheme, **({"group_size": 32} if scheme == "int4" else {})},
           "executor": {"name": "sim"}, "model": {"name": "opt-13b"}, "workload": {"name": "sharegpt", "rate": 1.0}}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.json").write_text(json.dumps({"output_throughput": tput}))


def test_sweep_over_kv_quant_carries_the_winning_scheme(tmp_path: Path) -> None:
    for i, (scheme, tput) in enumerate([("none", 50.0), ("int8", 95.0), ("int4", 120.0)]):
        _job(tmp_path, str(i), scheme, tput)
    best = pick_best(tmp_path, "output_throughput", "max")
    assert best.row["kv_quant.name"] == "int4" and best.system.startswith("kv_quant=int4")
    ov = best_overrides(best, [])
    assert "kv_quant=int4" in ov and "++kv_quant.group_size=32" in ov
    assert "kv_quant=none" in best_overrides(pick_best(tmp_path, "output_throughput", "min"), [])
    assert not any(o.startswith("kv_quant") for o in best_overrides(best, ["kv_quant=int8"]))  # CLI wins


@pytest.fixture
def quant_dir(tmp_path: Path) -> Path:
    (tmp_path / "runs").mkdir()
    pd.DataFrame([
        {"scheme": "none", "ppl_delta_pct": 0.0, "output_throughput": 10.0, "sim_output_throughput": 800.0},
        {"scheme": "int8", "ppl_delta_pct": 0.3, "output_throughput": 14.0, "sim_output_throughput": 1300.0},
        {"scheme": "int4", "ppl_delta_pct": 2.5, "output_throughput": 15.0, "sim_output_throughput": 1500.0},
        {"scheme": "kivi2", "ppl_delta_pct": 9.0, "output_throughput": 16.0, "sim_output_throughput": 1400.0},
    ]).to_csv(tmp_path / "summary.csv", index=False)
    return tmp_path


def test_quant_results_dir_with_accuracy_constraint(quant_dir: Path) -> None:
    assert pick_best(quant_dir, "output_throughput").row["scheme"] == "kivi2"
    assert pick_best(quant_dir, "sim_output_throughput").row["scheme"] == "int4"
    best = pick_best(quant_dir, "output_throughput", max_ppl_delta_pct=1.0)
    assert best.row["scheme"] == "int8" and best.value == pytest.approx(14.0)
    assert [s for s, _, _ in best.table] == ["kv_quant=int8", "kv_quant=none"]
    assert best_overrides(best, []) == ["kv_quant=int8"]
    assert "kvlab.quant" in best.summary()
    with pytest.raises(ValueError, match="ppl_delta_pct <= -1"):
        pick_best(quant_dir, max_ppl_delta_pct=-1)
    with pytest.raises(ValueError, match="available: .*sim_output_throughput"):
        pick_best(quant_dir, "tokens_per_joule")


def test_accuracy_constraint_needs_a_quant_dir(tmp_path: Path) -> None:
    _job(tmp_path, "0", "none", 1.0)
    with pytest.raises(ValueError, match="max_ppl_delta_pct needs a kvlab.quant results dir"):
        pick_best(tmp_path, max_ppl_delta_pct=1.0)
