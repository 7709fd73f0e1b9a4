"""``python -m kvlab.run`` end to end: the files it writes, its last line, its memory report, and
configuration errors that must stop it before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIM = ["executor=sim", "model=opt-13b", "hardware=a100-40gb", "workload=sharegpt", "show_progress=false"]
# Saturating load (4 req/s > the paged capacity of ~3 req/s here), past a 30 s fill-up.
LOADED = ["workload.rate=4", "workload.num_requests=500", "workload.warmup_s=30"]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # invariants every 10th step (kvlab/debug.py): these are 500-request paper-scale runs, where
    # checking the prefix index every step doubles the run
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KVLAB_CHECK_INVARIANTS": "10"}
    return subprocess.run([sys.executable, "-m", "kvlab.run", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def memory_runs(tmp_path_factory) -> dict[str, dict]:
    out = {}
    for name, extra in [("contiguous-max", ["allocator=contiguous", "allocator.reservation=max"]),
                        ("paged", ["allocator=paged"]), ("prefix", ["allocator=prefix"])]:
        d = tmp_path_factory.mktemp(name)
        proc = run_cli(*SIM, *LOADED, *extra, f"output_dir={d}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = {"stdout": proc.stdout, "dir": d}
    return out


@pytest.mark.parametrize("name", ["contiguous-max", "paged", "prefix"])
def test_run_writes_results_and_ends_with_results_line(memory_runs, name):
    run = memory_runs[name]
    lines = run["stdout"].strip().splitlines()
    assert lines[-1] == f"results: {run['dir']}"
    for category in ("token states", "reservation", "internal fragmentation", "external fragmentation"):
        assert category in run["stdout"]
    for f in ("metrics.json", "requests.csv", "steps.csv", "config.yaml"):
        assert (run["dir"] / f).is_file()
    m = json.loads((run["dir"] / "metrics.json").read_text())
    cats = ["mem_token_states_ratio", "mem_reservation_ratio", "mem_internal_frag_ratio",
            "mem_external_frag_ratio"]
    assert abs(sum(m[c] for c in cats) - 1.0) < 1e-6
    assert m["num_finished"] == m["num_requests"]


def test_paged_keeps_token_states_where_max_reservation_wastes_them(memory_runs):
    ratio = {k: json.loads((v["dir"] / "metrics.json").read_text())["mem_token_states_ratio"]
             for k, v in memory_runs.items()}
    assert ratio["contiguous-max"] < 0.35  # the paper's Orca (Max): 20.4%
    assert ratio["paged"] >= 0.90  # the paper's vLLM: 96.3%
    assert ratio["prefix"] >= 0.90


@pytest.mark.parametrize("args,needle", [
    (["allocator=pagd"], "Available options"),
    (["allocator.block_size=0"], "block_size"),
    (["allocator=contiguous", "allocator.reservation=huge"], "max"),
    (["workload.rate=-1"], "workload.rate"),
    (["model=gpt-9"], "Available options"),
    (["hardware=tpu"], "Available options"),
    (["workload=file", "workload.path=/nonexistent/trace.json"], "workload.path"),
    (["scheduler.preemption=drop"], "recompute"),
    (["allocator=prefix", "allocator.index=trie"], "index='trie' is invalid; choose one of: hash, radix"),
    (["allocator=prefix", "allocator.eviction=random"], "eviction='random' is invalid; choose one of: lru,"),
])
def test_bad_config_fails_before_any_work(args, needle, tmp_path):
    proc = run_cli(*SIM, *args, f"output_dir={tmp_path}/out", timeout=120)
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_fig13_batch_size_order(tmp_path, monkeypatch):
    """OPT-13B / A100-40GB / ShareGPT at 2 req/s: Orca Max < Pow2 < Oracle < paged (paper Fig. 13)."""
    from kvlab import debug
    from kvlab.experiment import run_experiment

    monkeypatch.setattr(debug, "CHECK_INVARIANTS", 10)  # 4 x 400 requests: every 10th step is enough
    from kvlab.llm import compose_config

    batched = {}
    for label, alloc, ov in [("max", "contiguous", ["allocator.reservation=max"]),
                             ("pow2", "contiguous", ["allocator.reservation=pow2"]),
                             ("oracle", "contiguous", ["allocator.reservation=oracle"]),
                             ("paged", "paged", [])]:
        cfg = compose_config("opt-13b", alloc, "fcfs", "sim", overrides=[
            "hardware=a100-40gb", "workload=sharegpt", "workload.rate=2", "workload.num_requests=400",
            "workload.warmup_s=30", "show_progress=false", *ov])
        batched[label] = run_experiment(cfg, tmp_path / label)["metrics"]["mean_batched_requests"]
    print("mean batched requests:", batched)
    assert batched["max"] < batched["pow2"] < batched["oracle"] < batched["paged"]
