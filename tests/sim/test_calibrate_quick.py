"""``python -m kvlab.calibrate --quick`` then ``--validate PATH --quick``, end to end on a tiny model.

A tiny random-weight Llama keeps it well under a minute on 2 shared cores. Timing on a shared
machine is noisy, so the accuracy bound here is loose; the real accuracy figures come from the full
commands (docs/simulator.md). What must hold: the profile's contents, the table's rows and columns,
and the quantities that do not depend on timing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kvlab.calibrate.__main__ import main
from kvlab.calibrate.validate import METRICS, SCALES

TINY = ["model.checkpoint=random", "model.name=tiny-llama", "model.num_layers=2", "model.hidden_size=64",
        "model.num_heads=4", "model.num_kv_heads=2", "model.head_dim=16", "model.ffn_size=128",
        "model.vocab_size=512", "model.num_params=null", "model.max_model_len=2048", "+kv.cpu_kv_gib=0.004"]


def test_quick_calibrate_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.json"
    args = ["--quick", "--threads", "1", "--out", str(path)] + [f"--override={o}" for o in TINY]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"profile: {path}"
    prof = json.loads(path.read_text())
    assert prof["model"] == "tiny-llama" and prof["dtype"] == "float32" and prof["threads"] == 1
    assert prof["machine"]["cpu_model"] and len(prof["load_average"]["before"]) == 3
    if Path("/proc/stat").exists():  # the share of the calibration's CPU time the hypervisor took
        assert 0 <= prof["steal_pct"] <= 100
    assert len(prof["fit"]["residuals"]) == prof["fit"]["num_points"] >= 10
    assert all(v["value"] >= 0 for v in prof["coefficients"].values())
    # every forward costs something: each grid step's predicted time is positive (which coefficient
    # carries the fixed cost is the fit's choice; on a noisy machine NNLS may put it on per-sequence terms)
    assert min(r["predicted_s"] for r in prof["fit"]["residuals"]) > 0
    manifest = json.loads((tmp_path / "tiny.manifest.json").read_text())  # named after its output
    assert manifest["entry_point"] == "kvlab.calibrate" and manifest["config"]["threads"] == 1

    csv = tmp_path / "table.csv"
    assert main(["--validate", str(path), "--quick", "--speed-probe", "--out", str(csv)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"validation: {csv}"
    # the validation's manifest sits beside its table; the calibration's is still there
    assert json.loads((tmp_path / "table.manifest.json").read_text())["entry_point"] == "kvlab.calibrate --validate"
    assert json.loads((tmp_path / "tiny.manifest.json").read_text())["entry_point"] == "kvlab.calibrate"
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table["workload"]) == ["offline batch", "poisson 0.5x saturation", "poisson 2x saturation"]
    for m in METRICS:
        assert {f"real_{m}", f"sim_{m}", f"err_{m}"} <= set(table.columns)
        assert table[f"err_{m}"].map(math.isfinite).all(), m
    for k in SCALES:  # the probe's regimes: finite positive ratios (the dense-decode slope: within [-1, 1])
        ok = (lambda v: math.isfinite(v) and abs(v) <= 1) if k.endswith("_slope") else (
            lambda v: math.isfinite(v) and v > 0)
        assert table[k].map(ok).all(), k
        # probes bracket the real run: its scale is the mean of the probes before and after it
        assert ((table[f"{k}_min"] <= table[k]) & (table[k] <= table[f"{k}_max"])).all()
    # every kept real run's CPU steal is measured (or NaN without /proc/stat), and a discard is counted
    assert {"real_steal_pct", "real_steal_max_pct", "real_discarded"} <= set(table.columns)
    assert ((table["real_discarded"] >= 0) & (table["real_discarded"] <= 2)).all()
    if Path("/proc/stat").exists():
        assert ((table["real_steal_max_pct"] >= 0) & (table["real_steal_max_pct"] <= 100)).all()
    offline = table.iloc[0]
    # with every request at t=0 the schedule does not depend on timing: same batches on both executors
    assert offline["sim_mean_batched_requests"] == pytest.approx(offline["real_mean_batched_requests"], rel=0.02)
    # loose, a sanity bound and not an accuracy claim (the standalone validations make those): the
    # quick profile and the real runs are seconds apart on a shared 2-core machine whose load can
    # change in between (a clean-clone CI run on 2026-12-07 saw the simulator at 2.8x the real
    # offline throughput while the other worker ran the paper-era sweeps). Within 4x either way still
    # fails on a wrong unit or a missing cost term.
    ratio = 1.0 + table["err_output_throughput"] / 100.0
    assert ((ratio > 0.25) & (ratio < 4.0)).all(), list(table["err_output_throughput"])
