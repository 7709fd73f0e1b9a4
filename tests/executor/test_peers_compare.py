"""experiments/peers/compare.py helpers: machine naming, process stop by PID, health wait, chart."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "peers" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("peers_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_machine_slug_names_cpu_isa_and_cores(compare):
    fp = {"cpu_model": "AMD EPYC 9R14 (x)", "isa_flags": ["avx2", "avx512f", "avx512_bf16"], "logical_cpus": 2}
    assert compare.machine_slug(fp) == "amd-epyc-9r14-x-avx512bf16-2cpu"
    assert compare.machine_slug(fp | {"isa_flags": ["avx2", "amx_bf16"]}).endswith("-amx-2cpu")
    assert compare.machine_slug(fp | {"isa_flags": ["avx2"]}).endswith("-avx2-2cpu")


def test_stop_ends_the_process_by_pid(compare):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        compare.stop(proc)
        assert proc.returncode is not None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_wait_healthy_fails_fast_when_the_server_exits(compare):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        compare.wait_healthy(1, proc, timeout=30)


def test_summary_and_chart(compare, tmp_path):
    rows = [{"server": "llama-server q4_1 t2", "streams16": {"output_throughput": 100.0, "failed": 0},
             "streams1": {"mean_tpot_ms": 20.0, "failed": 0}},
            {"server": "kvlab.serve default", "error": "TimeoutError: x"}]
    assert "100.0 tok/s" in compare.summary_line(rows[0]) and "ERROR" in compare.summary_line(rows[1])
    compare.plot(rows, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000
