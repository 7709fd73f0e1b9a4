"""The machine: CPU model and ISA flags (or the GPU), and its load.

Read by calibration profiles (their provenance check), run manifests (:mod:`kvlab.manifest`) and
the executor's device name (:mod:`kvlab.executor.device_monitor`): one place parses ``/proc/cpuinfo``.

Pure Python (reads ``/proc/cpuinfo``, ``/proc/stat``, ``lscpu`` where present, ``os.getloadavg``); torch is
imported only to name a CUDA device. The fingerprint is what a profile's provenance check
compares: a step-time fit is only valid on the same kind of machine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# ISA flags that change which GEMM/attention kernels torch picks; the rest of /proc/cpuinfo's
# flags (virtualisation, mitigations) do not change a step's speed class.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "avx_vnni")
BUSY_LOAD_PER_CPU = 0.5  # 1-minute load average per logical CPU above which timings are suspect


def cache_root() -> Path:
    """kvlab's per-user cache (converted checkpoints, file hashes, built CPU ops): ``$KVLAB_CACHE``
    if set, else ``~/.cache/kvlab``."""
    return Path(os.environ.get("KVLAB_CACHE") or Path.home() / ".cache" / "kvlab").expanduser()


def parse_cpuinfo(text: str) -> dict[str, str]:
    """``/proc/cpuinfo`` text -> {key: value} of its first processor."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info.setdefault(k.strip(), v.strip())
    return info


def read_cpuinfo() -> dict[str, str]:
    """This machine's parsed ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_cpuinfo(fh.read())
    except OSError:
        return {}


def _lscpu_model() -> str | None:
    if shutil.which("lscpu") is None:
        return None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_fingerprint() -> dict[str, Any]:
    """CPU model, family/model numbers, the ISA flags of :data:`ISA_FLAGS` it has, logical CPUs,
    architecture. ``cpu_family_model`` ("25/17") tells apart CPUs a VM names alike: two dev VMs
    were both "AMD EPYC", one Zen 3 (25/1), one Zen 4 (25/17)."""
    info = read_cpuinfo()
    flags = set(info.get("flags", "").split())
    fam, mod = info.get("cpu family"), info.get("model")
    return {"device": "cpu",
            "cpu_model": _lscpu_model() or info.get("model name") or platform.processor() or "unknown",
            "cpu_family_model": f"{fam}/{mod}" if fam and mod else None,
            "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "logical_cpus": os.cpu_count() or 1,
            "arch": platform.machine()}


def gpu_fingerprint(device_index: int = 0) -> dict[str, Any]:
    """The CUDA device's name, memory and compute capability (imports torch)."""
    import torch

    p = torch.cuda.get_device_properties(device_index)
    return {"device": "cuda", "gpu_name": p.name, "gpu_memory_bytes": int(p.total_memory),
            "compute_capability": f"{p.major}.{p.minor}", "cpu_model": cpu_fingerprint()["cpu_model"]}


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """The fingerprint of ``device`` ("cpu" or "cuda") on this machine; a CUDA request on a
    machine without CUDA gets ``{"device": "no CUDA device"}`` (so a GPU profile mismatches)."""
    if not device.startswith("cuda"):
        return cpu_fingerprint()
    import torch

    return gpu_fingerprint() if torch.cuda.is_available() else {"device": "no CUDA device"}


def mismatches(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between a profile's machine and this one (empty: same kind)."""
    keys = (("device", "gpu_name", "compute_capability") if recorded.get("device") == "cuda"
            else ("device", "cpu_model", "cpu_family_model", "isa_flags", "logical_cpus"))
    out = []
    for k in keys:
        a, b = recorded.get(k), current.get(k)
        if k == "cpu_family_model" and a is None:  # profiles before 2026-12-07 did not record it
            continue
        if a != b:
            out.append(f"{k}: profile {a!r}, this machine {b!r}")
    return out


def load_average() -> list[float]:
    """(1, 5, 15)-minute load averages; [] where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return []


def busy_message(load: list[float]) -> str | None:
    """A warning when the 1-minute load (taken before our own work starts) says other work
    competes for the cores, else None."""
    cpus = os.cpu_count() or 1
    if not load:
        return None
    if load[0] > BUSY_LOAD_PER_CPU * cpus:
        return (f"machine busy: 1-min load average {load[0]:.2f} on {cpus} CPUs (> {BUSY_LOAD_PER_CPU:g} per CPU) "
                "before measuring; timings will be inflated and noisy. Rerun on a quiet machine for a "
                "profile you can trust.")
    return None


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(steal, total) clock ticks summed over every CPU since boot, from ``/proc/stat``'s ``cpu``
    line; None where the OS has no such file. *Steal* is time the hypervisor ran someone else
    while this VM's vCPU wanted to run: a timing taken during it measures the neighbours too."""
    try:
        with stat.open() as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    """Share (%) of the CPU time between two :func:`cpu_ticks` readings that was stolen; NaN when
    either reading is missing or no tick passed."""
    if before is None or after is None or after[1] <= before[1]:
        return float("nan")
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])
