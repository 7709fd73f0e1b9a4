"""experiments/bench_kernels.py: refuses without CUDA, and its --smoke pipeline writes JSON + plots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench_kernels.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_refuses_without_cuda(tmp_path, capsys):
    assert _load().main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke run is the interpreter pipeline")
def test_smoke_writes_results(tmp_path):
    assert _load().main(["--smoke", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"decode_bandwidth.json", "decode_bandwidth.png", "fig18a.json", "fig18a.png"} <= names
    res = json.loads((tmp_path / "decode_bandwidth.json").read_text())
    rows = res["rows"]
    assert {(r["block_size"], r["batch"]) for r in rows} == {(1, 1), (1, 3), (16, 1), (16, 3)}
    assert all(r["max_abs_err_vs_sdpa"] < 0.05 and r["triton_s"] > 0 for r in rows)
    assert all(r["kv_bytes"] == 2 * r["batch"] * r["context"] * 2 * 16 * 2 for r in rows)  # kvh 2, D 16, bf16
    assert res["environment"]["interpreter"] is True
    assert "bw_min_frac" in res["targets"]
    assert {r["num_splits"] for r in res["tuning"]} == {1, 2, None}
