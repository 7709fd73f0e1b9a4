"""``manifest.json``: what produced a results directory (code, command, software, machine, model).

Every command that writes results (``kvlab.run``, ``kvlab.paper``, ``kvlab.bench``,
``kvlab.calibrate``) calls :func:`write_manifest` so that a number can always be traced back to
the commit, the command line, the resolved config, the library versions, the CPU (model and the
flags that change speed: AVX2, AVX-512, AVX512_BF16, AMX) or GPU it ran on, the thread count,
the seeds and the model file with its hash.

Collecting never fails a run: anything that cannot be determined (no git checkout, no GPU, no
model file) is recorded as ``None``. Reading ``/proc/cpuinfo`` and the package metadata is cheap;
the model file's sha256 is cached per (path, size, mtime) so a 100 MB GGUF is hashed once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvlab.machine import cache_root, parse_cpuinfo, read_cpuinfo

SPEED_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
               "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "triton", "transformers", "hydra-core", "numpy", "nvidia-ml-py", "fastapi")
_REPO = Path(__file__).resolve().parent.parent


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model, core count and the speed-relevant ISA flags (``cpuinfo``: /proc/cpuinfo text;
    default: this machine's)."""
    info = parse_cpuinfo(cpuinfo) if cpuinfo is not None else read_cpuinfo()
    flags = set(info.get("flags", "").split())
    return {"model": info.get("model name") or platform.processor() or None, "logical_cpus": os.cpu_count(),
            "machine": platform.machine(), "flags": {f: f in flags for f in SPEED_FLAGS}}


def gpu_info() -> list[dict[str, Any]] | None:
    """Name, memory and driver of each NVIDIA GPU via nvidia-ml-py; ``None`` when there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver or no device: this machine has no GPU to report
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                        "driver": driver.decode() if isinstance(driver, bytes) else driver})
        return out or None
    finally:
        pynvml.nvmlShutdown()


def git_state(repo: Path = _REPO) -> dict[str, Any]:
    """The checkout's commit and whether its tree has uncommitted changes (``None`` outside git)."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    """Python, kvlab and the key libraries' versions, from package metadata (imports nothing)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("kvlab", *PACKAGES):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    torch = sys.modules.get("torch")
    if torch is not None:  # the build actually loaded (a CUDA wheel may differ from metadata)
        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
    return out


def file_sha256(path: str | Path, cache_dir: Path | None = None) -> str | None:
    """sha256 of a file, cached by (path, size, mtime) under ``cache_dir``; None if unreadable."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cache = (cache_dir or cache_root() / "hashes") / f"{key}.sha256"
    if cache.is_file():
        return cache.read_text().strip()
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(digest)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return digest


def model_provenance(model_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model's checkpoint, its file, and whether the converted-weights cache was warm.

    Call it BEFORE the model loads: loading fills the cache. A GGUF checkpoint's file is the
    GGUF (hashed by :func:`collect`); a checkpoint directory's is its ``model.safetensors``.
    """
    ckpt = (model_cfg or {}).get("checkpoint")
    out: dict[str, Any] = {"checkpoint": ckpt, "file": None, "converted_cache_warm": None}
    if not ckpt or ckpt == "random":
        return out
    try:
        from kvlab.models.loader import GGUF_CHECKPOINTS, gguf_path

        if ckpt in GGUF_CHECKPOINTS:
            out["file"] = str(gguf_path(ckpt))
            name = str((model_cfg or {}).get("name", ckpt))
            out["converted_cache_warm"] = (cache_root() / name / "kvlab_source.json").is_file()
            return out
    except (ImportError, FileNotFoundError):
        return out
    weights = Path(str(ckpt)).expanduser() / "model.safetensors"
    out["file"] = str(weights) if weights.is_file() else None
    return out


def _threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def collect(config: Mapping[str, Any] | None = None, *, started: float | None = None,
            model: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest as a JSON-ready dict. ``started`` is a ``time.time()`` stamp (default: now);
    ``model`` is :func:`model_provenance`'s result (taken before the model loaded).

    Seeds are read from ``config`` (``seed`` and ``workload.sampling_seed``) when present.
    """
    model = dict(model or {"checkpoint": None, "file": None, "converted_cache_warm": None})
    model["sha256"] = file_sha256(model["file"]) if model.get("file") else None
    cfg = dict(config or {})
    wl = cfg.get("workload") if isinstance(cfg.get("workload"), Mapping) else {}
    now = time.time()
    return {
        "kvlab_manifest": 1,
        "git": git_state(),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "config": cfg or None,
        "versions": versions(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "threads": _threads(),
        "seeds": {"seed": cfg.get("seed"), "sampling_seed": (wl or {}).get("sampling_seed")},
        "model": model,
        "started": _iso(started if started is not None else now),
        "finished": _iso(now),
        **dict(extra or {}),
    }


def write_manifest(out_dir: str | Path, config: Mapping[str, Any] | None = None, *,
                   name: str = "manifest.json", **kw: Any) -> Path:
    """Write the manifest into ``out_dir`` (created if needed) as ``name``; returns its path.

    Entry points that own their output directory use the default name; those that write one file
    into a shared directory (``kvlab.calibrate``) pass a name derived from that file, so two runs
    there do not overwrite each other's manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(collect(config, **kw), indent=2, default=str))
    return path


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
