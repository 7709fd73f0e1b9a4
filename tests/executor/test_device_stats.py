"""Device naming and NVML readings degrade to "n/a" without a GPU (this CPU machine)."""

from __future__ import annotations

import torch

from kvlab.executor.device_monitor import NA, DeviceMonitor, device_metrics
from kvlab.records import StepRecord


def record(**kw) -> StepRecord:
    base = dict.fromkeys(StepRecord.__dataclass_fields__, 0)
    base.pop("gpu_memory_used_bytes"), base.pop("gpu_utilization_pct")
    return StepRecord(**(base | kw))


def test_cpu_monitor_names_the_cpu_and_samples_nothing():
    mon = DeviceMonitor(torch.device("cpu"))
    assert mon.name and not mon.available and mon.sample() is None


def test_device_metrics_are_na_without_readings_and_summarize_with_them():
    assert device_metrics(None, [record()]) == {"device": NA, "gpu_memory_used_peak_gib": NA,
                                                "gpu_utilization_mean_pct": NA}
    steps = [record(gpu_memory_used_bytes=2 * 2**30, gpu_utilization_pct=50.0),
             record(gpu_memory_used_bytes=3 * 2**30, gpu_utilization_pct=100.0), record()]
    assert device_metrics("H200", steps) == {"device": "H200", "gpu_memory_used_peak_gib": 3.0,
                                             "gpu_utilization_mean_pct": 75.0}
