"""Hardware profiles: per-GPU datasheet constants plus measured achievable fractions.

A :class:`HardwareProfile` is loaded from ``conf/hardware/<name>.yaml``. The YAML uses the units
datasheets print (TFLOP/s, GB/s with GB = 1e9 B, GiB for memory, µs/ns for latencies); this
module converts everything to SI (FLOP/s, bytes/s, bytes, seconds). Every constant's source is
written beside it in the YAML; none is fitted to the vLLM paper's figures.

Two optional extensions, both documented in ``docs/simulator.md``:

* ``hardware=calibrated hardware.profile=PATH [hardware.force=true]``: the constants and a
  fitted step-time model come from a profile file written by ``python -m kvlab.calibrate``
  (:mod:`kvlab.calibration_profile`); the simulator checks its provenance (machine, model, dtype).
* ``engine_step_overhead_us`` / ``engine_per_seq_us``: host overheads of the serving engine
  outside the forward pass, and ``engine_per_worker_step_us`` / ``engine_per_worker_seq_us`` its
  cost of driving each tensor-parallel worker per step, per sequence and per int of the step's
  metadata (``engine_per_worker_int_us``), and
  ``engine_allreduce_us`` its NCCL path's cost per all-reduce beyond ``interconnect_latency_us``
  (0 in the datasheet roofline mode; the paper-era mode, ``conf/experiment/era/paper2023.yaml``,
  sets them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MIB = 1 << 20

# yaml key -> (attribute, scale to SI, required)
_KEYS: dict[str, tuple[str, float, bool]] = {
    "peak_tflops": ("peak_flops", 1e12, True),
    "memory_gib": ("memory_bytes", GIB, True),
    "usable_memory_bytes": ("usable_memory_bytes", 1.0, False),
    "context_mib": ("context_bytes", MIB, True),
    "mem_bandwidth_gb_s": ("mem_bandwidth", 1e9, True),
    "interconnect_gb_s": ("interconnect_bandwidth", 1e9, True),
    "interconnect_latency_us": ("interconnect_latency_s", 1e-6, True),
    "pcie_gb_s": ("pcie_bandwidth", 1e9, True),
    "flop_efficiency": ("flop_efficiency", 1.0, True),
    "bw_efficiency": ("bw_efficiency", 1.0, True),
    "pcie_efficiency": ("pcie_efficiency", 1.0, True),
    "interconnect_efficiency": ("interconnect_efficiency", 1.0, True),
    "kernel_launch_us": ("kernel_launch_s", 1e-6, True),
    "copy_overhead_us": ("copy_overhead_s", 1e-6, True),
    "step_overhead_us": ("step_overhead_s", 1e-6, True),
    "dram_latency_ns": ("dram_latency_s", 1e-9, True),
    "max_resident_warps": ("max_resident_warps", 1.0, True),
    "price_per_gpu_hour": ("price_per_gpu_hour", 1.0, True),
    "engine_step_overhead_us": ("engine_step_overhead_s", 1e-6, False),
    "engine_per_seq_us": ("engine_per_seq_s", 1e-6, False),
    "engine_per_worker_step_us": ("engine_per_worker_step_s", 1e-6, False),
    "engine_per_worker_seq_us": ("engine_per_worker_seq_s", 1e-6, False),
    "engine_per_worker_int_us": ("engine_per_worker_int_s", 1e-6, False),
    "engine_allreduce_us": ("engine_allreduce_s", 1e-6, False),
}
# hardware=calibrated: the profile file, skip its provenance check, and how much slower the machine
# is now than the profile's model, per regime (kvlab.executor.cost_calibrated.regime): steps on the
# GGUF block path and host times x time_scale, dense steps with a prompt chunk x time_scale_prefill,
# dense decode-only steps x time_scale_dense_decode (null: time_scale), times (rows / ref)^slope over
# the probe's row range (time_scale_dense_decode_slope, 0 = flat); `--speed-probe` measures them
TIME_SCALE_KEYS = ("time_scale", "time_scale_prefill", "time_scale_dense_decode", "time_scale_dense_decode_slope")
_PROFILE_KEYS = ("profile", "force", *TIME_SCALE_KEYS)
_FRACTIONS = ("flop_efficiency", "bw_efficiency", "pcie_efficiency", "interconnect_efficiency")


@dataclass(frozen=True)
class HardwareProfile:
    """One accelerator (one GPU of a node; tensor parallelism multiplies them). SI units.

    ``memory_bytes`` is the datasheet size; ``usable_memory_bytes`` is what the CUDA runtime
    reports as the device total (the engine's ``gpu_memory_utilization`` applies to it);
    ``context_bytes`` is taken by the CUDA context outside any allocator. Efficiencies are
    achievable fractions of the peaks in (0, 1].
    """

    name: str
    peak_flops: float
    memory_bytes: float
    usable_memory_bytes: float
    context_bytes: float
    mem_bandwidth: float
    interconnect_bandwidth: float
    interconnect_latency_s: float
    pcie_bandwidth: float
    flop_efficiency: float
    bw_efficiency: float
    pcie_efficiency: float
    interconnect_efficiency: float
    kernel_launch_s: float
    copy_overhead_s: float
    step_overhead_s: float
    dram_latency_s: float
    max_resident_warps: float
    price_per_gpu_hour: float
    engine_step_overhead_s: float = 0.0
    engine_per_seq_s: float = 0.0
    engine_per_worker_step_s: float = 0.0  # x tensor-parallel workers, when there are 2 or more
    engine_per_worker_seq_s: float = 0.0  # x tensor-parallel workers x sequences, likewise
    engine_per_worker_int_s: float = 0.0  # x workers x ints sent (input tokens + block-table entries)
    engine_allreduce_s: float = 0.0  # the engine's NCCL path per all-reduce, beyond interconnect_latency_s
    calibration: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    force: bool = False
    time_scale: float = 1.0  # hardware=calibrated: multiplies the profile's step and host times
    time_scale_prefill: float | None = None  # ... instead, when set: dense steps with a prompt chunk
    time_scale_dense_decode: float | None = None  # ... and dense decode-only steps (at the reference rows)
    time_scale_dense_decode_slope: float | None = None  # d ln(scale) / d ln(rows) of dense decodes (None: 0)

    @property
    def time_scales(self) -> dict[str, float | None]:
        """The calibrated speed scales by their config keys (:data:`TIME_SCALE_KEYS`)."""
        return {k: getattr(self, k) for k in TIME_SCALE_KEYS}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> HardwareProfile:
        """Build from a ``conf/hardware/*.yaml`` mapping; raise ``ValueError`` naming a bad key.

        With ``profile`` set (``hardware=calibrated``) the constants come from that calibration
        profile and ``calibration`` holds it; the simulator checks its provenance.
        """
        if "profile" in cfg:
            return cls._from_profile(cfg)
        allowed = set(_KEYS) | {"name"}
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"hardware config: unknown key(s) {unknown}; known: {sorted(allowed)}")
        name = cfg.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("hardware config: 'name' must be a non-empty string")
        kwargs: dict[str, Any] = {"name": name}
        for key, (attr, scale, required) in _KEYS.items():
            if key not in cfg or cfg[key] is None:
                if required:
                    raise ValueError(f"hardware config {name!r}: missing key {key!r}")
                continue
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"hardware config {name!r}: {key} must be a number, got {value!r}")
            if value < 0:
                raise ValueError(f"hardware config {name!r}: {key} must be >= 0, got {value!r}")
            kwargs[attr] = float(value) * scale
        kwargs.setdefault("usable_memory_bytes", kwargs["memory_bytes"])
        profile = cls(**kwargs)
        profile.validate()
        return profile

    @classmethod
    def _from_profile(cls, cfg: Mapping[str, Any]) -> HardwareProfile:
        from kvlab.calibration_profile import load_profile

        allowed = set(_PROFILE_KEYS) | {"name"} | {k for k in _KEYS if k.startswith("engine_")}
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"hardware={cfg.get('name')}: unknown key(s) {unknown}; known: {sorted(allowed)} "
                             "(the other constants come from the profile file)")
        path = cfg.get("profile")
        if not path:
            raise ValueError("hardware=calibrated needs hardware.profile=PATH, a file written by "
                             "`python -m kvlab.calibrate` (it ends with the line 'profile: PATH')")
        force = cfg.get("force", False)
        if not isinstance(force, bool):
            raise ValueError(f"hardware.force must be true or false, got {force!r}")
        scales = {k: cfg.get(k) for k in TIME_SCALE_KEYS}
        scales["time_scale"] = 1.0 if scales["time_scale"] is None else scales["time_scale"]
        for key, v in scales.items():
            if key == "time_scale_dense_decode_slope":
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= 1):
                    raise ValueError(f"hardware.{key} must be a number in [-1, 1] (0 or null = flat), got {v!r}")
                continue
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"hardware.{key} must be a number > 0 (1.0 = as profiled"
                                 + (", null = time_scale" if key != "time_scale" else "") + f"), got {v!r}")
        prof = load_profile(str(path))
        base = {**prof["hardware"], "name": str(cfg.get("name") or "calibrated")}
        base.update({k: cfg[k] for k in cfg if k.startswith("engine_") and cfg[k] is not None})
        hw = cls.from_config(base)
        return cls(**{**{f: getattr(hw, f) for f in hw.__dataclass_fields__}, "calibration": prof,
                      "force": force, **{k: None if v is None else float(v) for k, v in scales.items()}})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first out-of-range constant."""
        for attr in ("peak_flops", "memory_bytes", "usable_memory_bytes", "mem_bandwidth",
                     "pcie_bandwidth", "max_resident_warps"):
            if getattr(self, attr) <= 0:
                raise ValueError(f"hardware config {self.name!r}: {attr} must be > 0")
        for attr in _FRACTIONS:
            if not 0 < getattr(self, attr) <= 1:
                raise ValueError(f"hardware config {self.name!r}: {attr} must be in (0, 1]")
        if self.usable_memory_bytes > self.memory_bytes:
            raise ValueError(f"hardware config {self.name!r}: usable_memory_bytes exceeds memory_gib")

    # Achievable rates, the only ones the cost model uses.
    @property
    def flops(self) -> float:
        return self.peak_flops * self.flop_efficiency

    @property
    def bandwidth(self) -> float:
        return self.mem_bandwidth * self.bw_efficiency

    @property
    def pcie(self) -> float:
        return self.pcie_bandwidth * self.pcie_efficiency

    @property
    def interconnect(self) -> float:
        return self.interconnect_bandwidth * self.interconnect_efficiency
