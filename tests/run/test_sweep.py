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
    # The numbers behind the figures: one row per (allocator, rate), systems sorted, rates ascending.
    assert list(zip(df["allocator.name"], df["workload.rate"])) == [
        (a, float(r)) for a in ("contiguous", "paged", "prefix") for r in (1, 2, 3, 4)]
    assert (df["status"] == "ok").all() and (df["num_finished"] == 60).all()
    cats = ["mem_token_states_ratio", "mem_reservation_ratio", "mem_internal_frag_ratio", "mem_external_frag_ratio"]
    assert ((df[cats].sum(axis=1) - 1).abs() < 1e-6).all()
    by = {a: g.set_index("workload.rate") for a, g in df.groupby("allocator.name")}
    for a, g in by.items():  # latency grows with load (the paper's Fig. 12 curves)
        lat = g["normalized_latency_s_per_token"]
        assert lat.is_monotonic_increasing, (a, lat.tolist())
    c, p = by["contiguous"], by["paged"]
    # vLLM vs Orca (Max) at every rate: lower normalized latency, more requests batched (Fig. 12/13),
    # far more of the memory holding token states and almost no internal fragmentation (Fig. 2).
    assert (p["normalized_latency_s_per_token"] < c["normalized_latency_s_per_token"]).all()
    assert (p["mean_batched_requests"] > c["mean_batched_requests"]).all()
    assert (p["mem_token_states_ratio"] > c["mem_token_states_ratio"]).all()
    assert (c["mem_internal_frag_ratio"] > 0.3).all() and (p["mem_internal_frag_ratio"] < 0.01).all()
    # ShareGPT has no shared prefixes: the prefix allocator behaves like paged (within 2%).
    rel = (by["prefix"]["normalized_latency_s_per_token"] / p["normalized_latency_s_per_token"] - 1).abs()
    assert (rel < 0.02).all(), rel.tolist()


def test_submitit_local_launcher(tmp_path):
    sweep = tmp_path / "submitit"
    run("-m", "kvlab.run", "-m", "hydra/launcher=submitit_local", *SIM, "allocator=paged,contiguous",
        "workload.num_requests=20", f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10")
    assert len(list(sweep.glob("*/metrics.json"))) == 2
