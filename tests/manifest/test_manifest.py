"""The results manifest: machine, versions, git state and model hash are recorded truthfully."""

from __future__ import annotations

import hashlib
import json

from kvlab import manifest

AVX2_ONLY = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma f16c\n"
AMX = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


def test_cpu_flags_parsed_per_machine_kind() -> None:
    a = manifest.cpu_info(AVX2_ONLY)
    assert a["model"] == "AMD EPYC 9R14"
    assert a["flags"]["avx2"] and not a["flags"]["avx512f"] and not a["flags"]["amx_bf16"]
    b = manifest.cpu_info(AMX)
    assert b["model"].startswith("Intel(R) Xeon")
    assert b["flags"]["avx512_bf16"] and b["flags"]["amx_bf16"] and not b["flags"]["avx512_vnni"]


def test_file_hash_is_sha256_and_cached(tmp_path) -> None:
    f = tmp_path / "model.gguf"
    f.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert manifest.file_sha256(f, cache) == want
    (entry,) = list(cache.iterdir())
    entry.write_text("stale-but-cached")  # a second call reads the cache, keyed by size+mtime
    assert manifest.file_sha256(f, cache) == "stale-but-cached"
    f.write_bytes(b"other weights")  # a changed file gets a new key and a fresh hash
    assert manifest.file_sha256(f, cache) == hashlib.sha256(b"other weights").hexdigest()
    assert manifest.file_sha256(tmp_path / "missing", cache) is None


def test_write_manifest_fields(tmp_path) -> None:
    cfg = {"seed": 7, "workload": {"name": "uniform", "sampling_seed": 3}, "dtype": "float32"}
    path = manifest.write_manifest(tmp_path / "out", cfg, started=0.0, extra={"kind": "test"})
    m = json.loads(path.read_text())
    assert m["config"] == cfg and m["seeds"] == {"seed": 7, "sampling_seed": 3}
    assert m["started"] == "1970-01-01T00:00:00Z" and m["finished"] > m["started"]
    assert m["versions"]["python"] and m["versions"]["torch"]
    assert len(m["git"]["commit"]) == 40 and isinstance(m["git"]["dirty"], bool)
    assert m["gpu"] is None or m["gpu"][0]["name"]
    assert set(m["cpu"]["flags"]) == set(manifest.SPEED_FLAGS)
    assert m["kind"] == "test" and m["model"]["file"] is None


def _job(root, name, cpu, dtype, gpu=None):
    d = root / name
    d.mkdir(parents=True)
    m = manifest.collect({"dtype": dtype})
    m["cpu"] = manifest.cpu_info(cpu)
    m["gpu"] = gpu
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "metrics.json").write_text(json.dumps({"output_throughput": 1.0}))
    return d


def test_compare_warns_on_mixed_machines_and_dtypes(tmp_path, capsys) -> None:
    from kvlab.compare import find_jobs, main, provenance_warnings

    root = tmp_path / "sweep"
    _job(root, "0", AVX2_ONLY, "float32")
    _job(root, "1", AVX2_ONLY, "float32")
    assert provenance_warnings(find_jobs(root), root) == []
    _job(root, "2", AMX, "bfloat16", gpu=[{"name": "NVIDIA H200"}])
    warns = provenance_warnings(find_jobs(root), root)
    joined = "\n".join(warns)
    assert "CPU model" in joined and "AMD EPYC 9R14 (0, 1)" in joined and "Platinum 8488C (2)" in joined
    assert "dtype" in joined and "GPU" in joined and "NVIDIA H200" in joined
    assert main([str(root), "--out", str(tmp_path / "out")]) == 0
    assert "warning: runs differ in CPU model" in capsys.readouterr().err


def test_kvlab_run_writes_a_manifest(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    args = ["executor=sim", "model=opt-13b", "hardware=a100-40gb", "workload=sharegpt", "show_progress=false",
            "workload.num_requests=20", "seed=5", f"output_dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "kvlab.run", *args], cwd=root, text=True, capture_output=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["entry_point"] == "kvlab.run" and m["seeds"]["seed"] == 5
    assert m["config"]["model"]["name"] == "opt-13b" and m["config"]["executor"]["name"] == "sim"
    assert any(a == "seed=5" for a in m["command"]) and m["model"]["checkpoint"] is None


def test_model_provenance_of_the_shipped_gguf() -> None:
    from kvlab.models.config import resolve_model

    p = manifest.model_provenance(resolve_model("smollm2-135m"))
    assert p["file"].endswith(".gguf") and isinstance(p["converted_cache_warm"], bool)
    assert manifest.model_provenance({"checkpoint": "random"})["file"] is None
