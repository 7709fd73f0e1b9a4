"""Where a kernel benchmark runs: the device's name and peak memory bandwidth, a timer, and the
environment record written beside every result (experiments/bench_kernels.py).

Peak bandwidth comes from nvidia-ml-py (max memory clock x bus width x 2 for DDR) when a GPU is
present, else from the ``conf/hardware/*.yaml`` whose name matches the device. The timer is
``triton.testing.do_bench``'s median on CUDA and one wall-clock call in the Triton interpreter
(``--smoke``, where timings mean nothing).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _yaml_bandwidth(device_name: str) -> tuple[float | None, str]:
    """Datasheet bandwidth (bytes/s) of the conf/hardware profile whose name matches the device."""
    import yaml

    name = device_name.lower()
    for path in sorted((ROOT / "conf" / "hardware").glob("*.yaml")):
        stem = path.stem  # e.g. h100-80gb, a100-40gb, h200
        chip, _, mem = stem.partition("-")
        if chip in name and (not mem or mem.removesuffix("gb") in name):
            cfg = yaml.safe_load(path.read_text())
            return float(cfg["mem_bandwidth_gb_s"]) * 1e9, f"conf/hardware/{path.name}"
    return None, "no matching conf/hardware profile"


def peak_bandwidth(device_name: str) -> tuple[float | None, str]:
    """Peak DRAM bandwidth in bytes/s and where it came from."""
    if torch.cuda.is_available():
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                mhz = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
                bits = pynvml.nvmlDeviceGetMemoryBusWidth(h)
            finally:
                pynvml.nvmlShutdown()
            if mhz and bits:
                return mhz * 1e6 * bits * 2 / 8, f"nvml: max memory clock {mhz} MHz x bus {bits} bit x 2"
        except Exception as e:  # noqa: BLE001 - any NVML failure falls back to the datasheet
            print(f"nvml peak bandwidth unavailable ({e!r}); using conf/hardware", file=sys.stderr)
    if not torch.cuda.is_available():
        return _yaml_bandwidth("cpu") if device_name == "cpu" else (None, "no GPU")
    return _yaml_bandwidth(device_name)


def timer(smoke: bool):
    """fn -> seconds: do_bench median on CUDA; one wall-clock call in the interpreter."""
    if smoke:
        def wall(fn) -> float:
            fn()
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return wall
    from triton.testing import do_bench

    return lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3


def environment(device: str) -> dict:
    import triton

    env = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
           "triton": triton.__version__, "python": platform.python_version(), "host": platform.node(),
           "interpreter": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")}
    if device == "cuda":
        env["device"] = torch.cuda.get_device_name()
        env["sms"] = torch.cuda.get_device_properties(0).multi_processor_count
    else:
        env["device"] = "cpu"
        env["load_average"] = os.getloadavg()
    return env
