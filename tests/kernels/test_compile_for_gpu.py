"""The kernels compile for a real GPU target (sm_90) on a CPU machine: the interpreter cannot show that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_decode_and_prefill_compile_for_sm90_without_spills(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    out = tmp_path / "compile.json"
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "compile_kernels.py"), "--quick", "--arch", "90",
                          "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["kernel"].split()[0] for r in rows} == {"decode", "prefill"}
    for r in rows:
        assert "error" not in r and r["stack_bytes"] == 0 and r["registers"] <= 255
        assert r["pipelined_loads"] > 0, f"{r['kernel']}: K/V loads are not software-pipelined"
