"""Sweeps: one command runs allocators x rates in parallel (joblib launcher), ``kvlab.compare``
aggregates and plots them; the submitit launcher path (used for Slurm clusters) runs locally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
SIM = ["executor=sim", "model=opt-13b", "hardware=a100-40gb", "workload=sharegpt", "show_progress=false"]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, text=True, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_joblib_sweep_then_compare(tmp_path):
    sweep = tmp_path / "sweep"
    run("-m", "kvlab.run", "-m", *SIM, "allocator=contiguous,paged,prefix", "workload.rate=1,2,3,4",
        "workload.num_requests=60", f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert len(jobs) == 12
    proc = run("-m", "kvlab.compare", str(sweep), "--out", str(tmp_path / "cmp"))
    df = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(df) == 12
    for png in ("normalized_latency.png", "memory_breakdown.png", "batched_requests.png"):
        assert (tmp_path / "cmp" / png).stat().st_size > 10_000, proc.stdout


def test_submitit_local_launcher(tmp_path):
    sweep = tmp_path / "submitit"
    run("-m", "kvlab.run", "-m", "hydra/launcher=submitit_local", *SIM, "allocator=paged,contiguous",
        "workload.num_requests=20", f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10")
    assert len(list(sweep.glob("*/metrics.json"))) == 2
