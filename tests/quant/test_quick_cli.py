"""``python -m kvlab.quant --quick`` as a real subprocess: it finishes, and writes a summary.csv whose
numbers obey the relations that must hold whatever the measured values are.

No wall-clock assertion: how long ``--quick`` takes is a speed figure, which the CLI prints itself
and docs/quantization.md reports with its machine; a unit test on a shared VM (where the hypervisor
can take over half of the CPU time) would fail for the neighbours' load, not for kvlab's.
``HANG_S`` only stops a run that would never end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvlab.quant import settings
from kvlab.quant.report import REQUIRED_COLUMNS
from kvlab.quant.schemes import available_schemes

REPO = Path(__file__).resolve().parents[2]
HANG_S = 1200  # a hang guard, not a speed bound


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("quant") / "quick"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kvlab.quant", "--quick", "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = proc.communicate(timeout=HANG_S)
    finally:
        if proc.poll() is None:  # stopped by PID
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-3000:]
    return out, stdout


def test_quick_prints_progress_and_results(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    assert stdout.rstrip().splitlines()[-1] == f"results: {out}"
    assert "[1/" in stdout and "none: perplexity" in stdout and "passkey" in stdout  # progress lines
    for name in ("summary.csv", "summary.md", "pareto.png", "serving.png", "config.yaml", "manifest.json"):
        assert (out / name).is_file(), name
    assert not (out / ".ref").exists()  # the reference log-probs are removed


def test_summary_relations(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    df = pd.read_csv(out / "summary.csv")
    s = settings.quick()
    assert list(df.columns[:len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert df["scheme"].tolist() == available_schemes()
    by = df.set_index("scheme")
    base = by.loc["none"]
    assert base["ppl_delta_pct"] == 0 and base["kl_mean"] == 0 and base["top1_agreement"] == 1
    assert base["greedy_match_tokens"] == s.greedy_tokens
    assert base["bytes_per_token"] == 2 * 30 * 3 * 64 * 4  # SmolLM2 fp32 K+V, all layers
    assert (df[["ppl", "kl_mean", "output_throughput", "sim_output_throughput"]].notna()).all().all()
    assert (df["kl_mean"] >= 0).all() and df["top1_agreement"].between(0, 1).all()
    assert df["greedy_match_tokens"].between(0, s.greedy_tokens).all()
    assert df["passkey_accuracy"].between(0, 1).all()
    bpt = by["bytes_per_token"]
    for q in ("int8", "int4", "kivi2", "fp8_e4m3", "fp8_e5m2"):
        if q in by.index:
            assert bpt[q] < bpt["none"], q
            assert by.loc[q, "kl_mean"] > 0, f"{q}: a quantized cache that changes nothing is not quantizing"
    if {"int8", "int4"} <= set(by.index):
        assert bpt["none"] > bpt["int8"] > bpt["int4"]
    # One fixed budget: fewer bytes per token -> at least as many tokens (both executors), and the
    # capacity is the budget over bytes per token to within one block.
    for pre in ("", "sim_"):
        rows = df.sort_values(f"{pre}bytes_per_token")
        assert rows[f"{pre}capacity_tokens"].is_monotonic_decreasing, rows[["scheme", f"{pre}capacity_tokens"]]
    budget = s.cpu_budget_tokens * base["bytes_per_token"]
    # (<= one block of 16 tokens: a format with per-cache state, e.g. fp8 scales, pays it from the budget)
    assert ((df["capacity_tokens"] - budget / df["bytes_per_token"]).abs() <= 16).all()
    assert (df["max_batch"] >= 1).all() and (df["num_preemptions"] >= 0).all()


def test_none_perplexity_equals_the_unquantized_engine(quick_run: tuple[Path, str], tmp_path: Path) -> None:
    """The harness's baseline row (chunked prefill through the cache, chunk 32) equals a plain
    engine with the default config scoring the same text in ONE step (no cached reads)."""
    from kvlab.engine import LLMEngine
    from kvlab.llm import compose_config
    from kvlab.quant.accuracy import TextScore, score_context
    from kvlab.quant.text import eval_contexts

    out, _ = quick_run
    s = settings.quick()
    engine = LLMEngine(compose_config("smollm2-135m", "paged", "fcfs", "torch",
                                      ["device=cpu", "dtype=float32", "executor.num_threads=1", "kv.swap_space_gib=0",
                                       "allocator.num_blocks=64"]))
    (ids,), _ = eval_contexts(engine.tokenizer, s.ppl_context_tokens, 1)
    score = TextScore()
    score_context(engine, ids, len(ids), score, tmp_path / "ref.pt", True)
    csv_ppl = pd.read_csv(out / "summary.csv").set_index("scheme").loc["none", "ppl"]
    assert csv_ppl == pytest.approx(score.ppl, rel=1e-4)
