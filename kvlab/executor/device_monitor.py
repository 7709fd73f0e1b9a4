"""Which device a run used, and sampled GPU readings from NVML (nvidia-ml-py).

:class:`DeviceMonitor` names the device (``torch.cuda.get_device_name`` or the CPU model) and, on
CUDA, reads the device's memory used and GPU utilization from NVML. Readings are *sampled*: at
most one NVML query per ``min_interval_s`` (the last reading is reused in between), never per
kernel — NVML's utilization is itself the fraction of a recent driver sample period in which a
kernel ran. Without a GPU (or when ``pynvml.nvmlInit`` fails) ``sample()`` returns None, and
:func:`device_metrics` reports "n/a".
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kvlab.machine import read_cpuinfo

if TYPE_CHECKING:  # torch is imported lazily: run metrics (device_metrics) must not pull it in
    import torch

NA = "n/a"


def device_name(device: torch.device) -> str:
    """A human name: the GPU model on CUDA, the CPU model name otherwise."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return read_cpuinfo().get("model name") or platform.processor() or platform.machine() or "cpu"


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    """The NVML handle of torch's ``device`` (by UUID, so CUDA_VISIBLE_DEVICES remapping is right)."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:  # noqa: BLE001 - fall back to the index below
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)


class DeviceMonitor:
    """Device name + throttled NVML samples. ``sample()`` mutates only the cached last reading."""

    def __init__(self, device: torch.device, min_interval_s: float = 0.05) -> None:
        self.device = device
        self.name = device_name(device)
        self.min_interval_s = min_interval_s
        self.error: str | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._last: dict[str, float] | None = None
        self._last_t = -float("inf")
        if device.type != "cuda":
            self.error = "not a CUDA device"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = _nvml_handle(pynvml, device)
            self._nvml = pynvml
        except Exception as e:  # noqa: BLE001 - NVML missing or failing: readings degrade to n/a
            self.error = f"NVML unavailable: {e}"

    @property
    def available(self) -> bool:
        return self._handle is not None

    def sample(self) -> dict[str, float] | None:
        """{"gpu_memory_used_bytes", "gpu_utilization_pct"} or None without NVML."""
        if self._handle is None:
            return None
        now = time.perf_counter()
        if now - self._last_t >= self.min_interval_s:
            mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self._last = {"gpu_memory_used_bytes": float(mem.used), "gpu_utilization_pct": float(util.gpu)}
            self._last_t = now
        return self._last


def device_metrics(name: str | None, steps: Iterable[Any]) -> dict[str, Any]:
    """Run-level device figures from step records: the device name, peak GPU memory used (GiB) and
    mean GPU utilization (%), each "n/a" where no step carried a reading. Pure."""
    steps = list(steps)
    mem = [s.gpu_memory_used_bytes for s in steps if getattr(s, "gpu_memory_used_bytes", None) is not None]
    util = [s.gpu_utilization_pct for s in steps if getattr(s, "gpu_utilization_pct", None) is not None]
    return {
        "device": name or NA,
        "gpu_memory_used_peak_gib": max(mem) / (1 << 30) if mem else NA,
        "gpu_utilization_mean_pct": sum(util) / len(util) if util else NA,
    }
