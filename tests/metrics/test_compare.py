"""python -m kvlab.compare on a fake Hydra multirun directory: 2 systems x 2 rates."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from kvlab.compare import collect, main

SYSTEMS = [("paged", None), ("contiguous", "oracle")]
RATES = [1.0, 2.0]


def make_sweep(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for name, reservation in SYSTEMS:
        for rate in RATES:
            d = root / str(job)
            cfg = {"allocator": {"name": name, "reservation": reservation}, "scheduler": {"name": "fcfs"},
                   "workload": {"name": "sharegpt", "rate": rate}, "model": {"name": "opt-13b"},
                   "hardware": {"name": "a100-40gb"}, "seed": 0}
            # half of the jobs keep the resolved config only under .hydra/, like a bare Hydra job
            cfg_path = d / ".hydra" / "config.yaml" if job % 2 else d / "config.yaml"
            cfg_path.parent.mkdir(parents=True)
            cfg_path.write_text(yaml.safe_dump(cfg))
            paged = name == "paged"
            metrics = {"normalized_latency_s_per_token": 0.03 * rate * (1 if paged else 3),
                       "mean_batched_requests": 30.0 if paged else 13.0,
                       "mem_token_states_ratio": 0.96 if paged else 0.38,
                       "mem_reservation_ratio": 0.01 if paged else 0.25,
                       "mem_internal_frag_ratio": 0.01 if paged else 0.0,
                       "mem_external_frag_ratio": 0.02 if paged else 0.37,
                       "request_throughput": rate, "swapped_bytes": None}
            (d / "metrics.json").write_text(json.dumps(metrics))
            job += 1
    return root


def test_collect_builds_one_row_per_job_with_system_labels(tmp_path):
    df, varying = collect(make_sweep(tmp_path))
    assert len(df) == 4 and set(varying) == {"allocator.name", "allocator.reservation"}
    assert df["system"].nunique() == 2
    assert sorted(df["workload.rate"].unique()) == RATES
    assert (df["status"] == "ok").all()


def test_cli_writes_csv_and_pngs(tmp_path, capsys):
    sweep, out = make_sweep(tmp_path / "sweep"), tmp_path / "out"
    sweep.mkdir(exist_ok=True)
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    expected = ["compare.csv", "normalized_latency.png", "memory_breakdown.png", "batched_requests.png"]
    for name in expected:
        assert (out / name).stat().st_size > 0
        assert str(out / name) in printed
    df = pd.read_csv(out / "compare.csv")
    assert {"system", "job", "allocator.name", "normalized_latency_s_per_token"} <= set(df.columns)


def test_missing_metrics_are_reported_not_fatal(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    (sweep / "3" / "metrics.json").unlink()
    (sweep / "2" / "metrics.json").write_text(json.dumps({"mean_batched_requests": 5.0}))
    assert main([str(sweep)]) == 0  # default --out: the sweep dir
    df = pd.read_csv(sweep / "compare.csv")
    assert "no metrics.json" in set(df["status"])
    assert (sweep / "normalized_latency.png").exists()
    assert "warning" in capsys.readouterr().err


@pytest.mark.parametrize("setup", ["empty", "missing"])
def test_bad_sweep_dir_fails_cleanly(tmp_path, setup):
    target = tmp_path if setup == "empty" else tmp_path / "nope"
    assert main([str(target)]) != 0
