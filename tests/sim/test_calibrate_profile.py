"""Calibration profiles: the simulator runs from one, and refuses one from another machine/model/dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvlab.calibration_profile import FORMAT, ProfileMismatch, load_profile
from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.cost_calibrated import FEATURE_NAMES, FEATURES, HOST_FEATURES
from kvlab.executor.sim import build_sim_executor
from kvlab.machine import cpu_fingerprint
from kvlab.request import SamplingParams
from tests.sim.conftest import load_yaml, sim_cfg

COEF = dict.fromkeys(FEATURE_NAMES, 0.0) | {"step": 0.03, "tokens": 0.002, "decode_kv": 1e-5, "logit_rows": 1e-3}
HOST = {"step": 0.001, "seqs": 1e-4}


def write(tmp_path: Path, **changes: object) -> Path:
    prof = {"format": FORMAT, "machine": cpu_fingerprint(), "model": "smollm2-135m", "dtype": "float32",
            "dtype_bytes": 4, "threads": 2,
            "coefficients": {k: {"value": COEF[k], "unit": u, "meaning": m} for k, u, m in FEATURES},
            "host_overhead": {k: {"value": HOST[k], "unit": u, "meaning": m} for k, u, m in HOST_FEATURES},
            "kv_budget_bytes": 1 << 30, "hardware": load_yaml("hardware", "cpu") | {"name": "calibrated"},
            "fit": {"num_points": 1, "rms_rel_error": 0.01}}
    prof.update(changes)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof))
    return path


def cfg(path: Path | None, model: str = "smollm2-135m", force: bool = False) -> dict:
    c = sim_cfg(model, "cpu")
    c["hardware"] = load_yaml("hardware", "calibrated") | {"profile": None if path is None else str(path),
                                                           "force": force}
    return c


def test_sim_runs_from_a_profile(tmp_path: Path) -> None:
    ex = build_sim_executor(cfg(write(tmp_path)))
    assert ex.calibrated is not None and ex.provenance_problems == []
    assert ex.kv_capacity_blocks(16) * 16 * ex.shape.kv_bytes_per_token_per_gpu <= 1 << 30
    ex.init_cache(100, 0, 16)
    sp = SamplingParams(max_tokens=8)
    seqs = [ScheduledSeq(i, str(i), [5], 99, list(range(i * 7, i * 7 + 7)), 1, sp) for i in range(4)]
    out = ex.execute(StepInput(seqs))
    want = 0.03 + 4 * 0.002 + 4 * 100 * 1e-5 + 4 * 1e-3 + 0.001 + 4 * 1e-4
    assert out.duration_s == pytest.approx(want)
    assert set(out.samples) == {0, 1, 2, 3}


@pytest.mark.parametrize("change, words", [
    ({"machine": cpu_fingerprint() | {"cpu_model": "Some Other CPU 9000"}}, "cpu_model"),
    ({"machine": cpu_fingerprint() | {"isa_flags": ["avx512f", "amx_bf16"]}}, "isa_flags"),
    ({"machine": cpu_fingerprint() | {"cpu_family_model": "1/2"}}, "cpu_family_model"),  # same name, other CPU
    ({"machine": {"device": "cuda", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}}, "device"),
    ({"model": "llama-3-8b"}, "model"),
    ({"dtype": "bfloat16", "dtype_bytes": 2}, "dtype"),
])
def test_a_mismatched_profile_is_refused_unless_forced(tmp_path: Path, change: dict, words: str) -> None:
    path = write(tmp_path, **change)
    with pytest.raises(ProfileMismatch, match=rf"{words}.*hardware.force=true"):
        build_sim_executor(cfg(path))
    ex = build_sim_executor(cfg(path, force=True))
    assert any(words in p for p in ex.provenance_problems)


def test_a_profile_without_family_model_is_judged_on_the_rest(tmp_path: Path) -> None:
    # profiles written before cpu_family_model existed: that key alone does not refuse them
    machine = {k: v for k, v in cpu_fingerprint().items() if k != "cpu_family_model"}
    assert build_sim_executor(cfg(write(tmp_path, machine=machine))).provenance_problems == []


def test_profile_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs hardware.profile=PATH"):
        build_sim_executor(cfg(None))
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_sim_executor(cfg(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a kvlab calibration profile"):
        load_profile(bad)
    c = cfg(write(tmp_path))
    c["hardware"]["peak_tflops"] = 1.0
    with pytest.raises(ValueError, match="unknown key"):
        build_sim_executor(c)
