"""Run-time choice of the model dtype and the matmul path (``dtype=auto``, ``executor.gemm=auto``).

The machines kvlab runs on differ: some CPUs have a native bf16 GEMM (AVX512_BF16 / AMX, where
oneDNN runs bf16 matmuls at up to twice the fp32 rate), some expose AVX2 only (torch's bf16
matmul there is a per-row loop, ~5x slower than fp32 on a batch; :mod:`kvlab.models.linear`'s
tiled upcast path works around it). So the default is decided on the machine, at run time:

* CUDA: bf16 (tensor cores), ``gemm=native``.
* CPU with a native bf16 GEMM (torch's oneDNN says so AND the CPU flags show ``avx512_bf16`` or
  ``amx_bf16``): bf16 if a short measured check says a model-shaped bf16 matmul is faster than
  fp32 (by :data:`MARGIN`), else fp32. Where the fp32 model also gets kvlab's fp32-only fast paths
  (the C paged-decode op; matmuls over the GGUF checkpoint's blocks), which a bf16 model gives up,
  bf16 must win the matmul by far more (:data:`FAST_FP32_MARGIN`): on the AVX-512 BF16 Zen 4 VM
  (no AMX) the check read 0.89-0.98x, flipping across 0.9 between processes, while the bf16 server
  delivered 0.96x fp32's throughput at 16 streams and 2.3x its TPOT at one (docs/performance.md).
* CPU without one: fp32, not measured against bf16. The tiled upcast path makes only the
  matmuls of a bf16 model fast; the rest of a step (the C paged-decode op, the matmuls over the
  checkpoint's GGUF blocks, the elementwise ops) has an fp32-only fast path, and on the AVX2 dev VM
  a bf16 model measured 1.7-2.5x slower per decode step even when the matmul check alone rated
  upcast at 0.89x fp32 (a check that flipped between runs around the 0.9 margin). ``dtype=bfloat16``
  (or ``executor.gemm=upcast`` with ``dtype=auto``, which then measures) still chooses it.
* fp32 on a CPU (chosen or explicit) runs through oneDNN on prepacked weights (``gemm=packed``,
  :class:`kvlab.models.linear.PackedLinear`) where torch has oneDNN and the check says it beats
  torch's own fp32 matmul (MKL) by :data:`MARGIN`; that fp32 time is the one bf16 must beat.

The check (:func:`measure_linear`) times the model's matmul path on its own MLP shape, with weights
streaming from memory, at batch :data:`CHECK_ROWS` (a busy server's decode step), best of a few
repetitions; it takes well under a second on a quiet machine. On a loaded
machine it is noisy: pass an explicit ``dtype`` where a run must be reproducible. Every decision carries a
``reason`` string and the measured times; the executor exposes it as ``precision`` and the
banner, ``metrics.json`` and the run manifest print it.

An explicit ``dtype`` is never overridden; ``gemm=auto`` with an explicit 16-bit dtype takes the
upcast path exactly where there is no native 16-bit GEMM (no measurement); with an explicit fp32
it measures native vs packed. ``gemm=packed`` is fp32-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from kvlab.models.linear import has_native_gemm, packed_gemm_available, prepare_weight

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CHECK_ROWS = 16  # the batched decode step the check times (a busy server)
MARGIN = 0.9  # bf16 must take less than this fraction of fp32's time to be chosen
# ... and this where fp32 has kvlab's fp32-only fast paths. A judgment between two facts: at 0.89-0.98
# bf16 lost end to end (Zen 4, AVX-512 BF16); a bf16 model still gains on prefill and large decode
# batches, so a matmul twice as fast (AMX-class) should win. Not measured on an AMX machine.
FAST_FP32_MARGIN = 0.6
UPCAST_NOT_AUTO = ("the tiled upcast path speeds up the matmuls only, while the C decode op and the GGUF "
                   "block matmuls are fp32-only: bf16 measured slower end to end; dtype=bfloat16 chooses it")
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

# measure(dtype, gemm) -> seconds for the check's matmuls (injectable for tests)
MeasureFn = Callable[[torch.dtype, str], float]


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``dtype``/``gemm`` resolved to on this machine, and why. Immutable.

    ``measured_ms`` maps ``"<dtype>/<gemm>"`` to the check's time in ms (empty when nothing was
    measured: an explicit dtype, or CUDA).
    """

    dtype: torch.dtype
    gemm: str
    reason: str
    requested_dtype: str = "auto"
    requested_gemm: str = "auto"
    cpu_flags: tuple[str, ...] = ()
    native_bf16_gemm: bool = False
    measured_ms: dict[str, float] = field(default_factory=dict)
    weight_blocks: str = "off"  # matmuls over the checkpoint's GGUF blocks (kvlab.models.block_linear)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (dtype as its name)."""
        d = asdict(self)
        d["dtype"] = DTYPE_NAMES.get(self.dtype, str(self.dtype))
        d["cpu_flags"] = list(self.cpu_flags)
        return d

    def summary(self) -> str:
        """One line for the banner."""
        out = f"dtype={DTYPE_NAMES.get(self.dtype, self.dtype)}, gemm={self.gemm} ({self.reason})"
        return out if self.weight_blocks == "off" else f"{out}; weight blocks: {self.weight_blocks}"


def cpu_flags() -> tuple[str, ...]:
    """The ISA flags of this CPU that matter here (:func:`kvlab.machine.cpu_fingerprint`)."""
    from kvlab.machine import cpu_fingerprint

    return tuple(cpu_fingerprint()["isa_flags"])


def native_bf16_gemm(flags: Sequence[str]) -> bool:
    """A native bf16 GEMM: the CPU has the instructions and torch's oneDNN uses them."""
    return any(f in flags for f in NATIVE_BF16_FLAGS) and has_native_gemm(torch.device("cpu"), torch.bfloat16)


def measure_linear(hidden: int, ffn: int, reps: int = 3, weight_mib: int = 64) -> MeasureFn:
    """A :data:`MeasureFn` timing the fused gate/up matmul ``[rows, hidden] x [2*ffn, hidden]^T``
    at :data:`CHECK_ROWS` rows (a batched decode step, what a serving engine runs) through enough
    distinct weight matrices (``weight_mib`` of fp32, more than a CPU's last-level cache) that
    weights stream from memory as in a real decode step; best of ``reps``.

    Batch 1 is not timed: serving throughput is made at batch, and on the AVX2 dev VM (end to
    end, busy machine) bf16/upcast took 0.85x fp32's step time at batch 1 but 1.15x at batch 16,
    so counting batch 1 would pick the slower default for a server. The path timed is the model's
    own (:func:`make_linear`: the upcast path keeps the native per-row product below its
    ``min_rows``). Runs on ONE thread: the ratio is what decides, and one thread is far less
    disturbed by other processes on the cores than a team of threads that must all be scheduled
    at once. CPU only."""
    from kvlab.models.linear import make_linear

    gen = torch.Generator().manual_seed(0)
    n_mats = max(1, (weight_mib << 20) // (2 * ffn * hidden * 4))
    w32 = [torch.randn(2 * ffn, hidden, generator=gen) * hidden ** -0.5 for _ in range(n_mats)]
    xs32 = [torch.randn(CHECK_ROWS, hidden, generator=gen)]

    def measure(dtype: torch.dtype, gemm: str) -> float:
        fn, _ = make_linear(torch.device("cpu"), dtype, gemm)
        ws = [prepare_weight(fn, w.to(dtype)) for w in w32]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _time(fn, ws, [x.to(dtype) for x in xs32], reps)
        finally:
            torch.set_num_threads(threads)

    return measure


def _time(fn: Callable[..., torch.Tensor], ws: list[torch.Tensor], xs: list[torch.Tensor], reps: int) -> float:
    total = 0.0
    for x in xs:
        fn(x, ws[0], None)  # warm-up (allocations, oneDNN primitive creation)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            for w in ws:
                fn(x, w, None)
            best = min(best, time.perf_counter() - t)
        total += best
    return total


def _key(dtype: torch.dtype, gemm: str) -> str:
    return f"{DTYPE_NAMES[dtype]}/{gemm}"


def choose_precision(device: torch.device, dtype: str = "auto", gemm: str = "auto", *,
                     hidden: int = 576, ffn: int = 1536, flags: Sequence[str] | None = None,
                     native_bf16: bool | None = None, packable: bool | None = None,
                     measure: MeasureFn | None = None, fp32_fast_paths: str = "") -> PrecisionChoice:
    """Resolve ``dtype`` (``auto`` or a name) and ``gemm`` (``auto|native|upcast|packed``) for ``device``.

    ``flags``, ``native_bf16``, ``packable`` (oneDNN weight prepacking available) and ``measure``
    default to this machine's (tests pass fakes). ``fp32_fast_paths`` names the fp32-only fast
    paths this model would run (:func:`fp32_fast_paths`; empty: none), which raise bf16's bar to
    :data:`FAST_FP32_MARGIN`.
    Raises ``ValueError`` naming the key and its choices for an unknown value.
    """
    from kvlab.config import DTYPE_CHOICES, GEMM_CHOICES

    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype={dtype!r} is unknown; choose one of: {', '.join(DTYPE_CHOICES)}")
    if gemm not in GEMM_CHOICES:
        raise ValueError(f"executor.gemm={gemm!r} is unknown; choose one of: {', '.join(GEMM_CHOICES)}")
    base: dict[str, Any] = {"requested_dtype": dtype, "requested_gemm": gemm}
    if device.type != "cpu":
        dt = torch.bfloat16 if dtype == "auto" else getattr(torch, dtype)
        return PrecisionChoice(dt, "native", f"{device.type}: native 16-bit GEMM" if dtype == "auto"
                               else "dtype set explicitly", **base)
    flags = tuple(cpu_flags() if flags is None else flags)
    native = native_bf16_gemm(flags) if native_bf16 is None else native_bf16
    packable = packed_gemm_available() if packable is None else packable
    base.update(cpu_flags=flags, native_bf16_gemm=native)
    if dtype not in ("auto", "float32"):
        dt = getattr(torch, dtype)
        if gemm in ("native", "packed"):
            why = "dtype set explicitly" + ("; gemm=packed is fp32-only: native" if gemm == "packed" else "")
            return PrecisionChoice(dt, "native", why, **base)
        if gemm == "upcast":
            return PrecisionChoice(dt, "upcast", "dtype and gemm set explicitly", **base)
        has = native if dt == torch.bfloat16 else has_native_gemm(device, dt)
        return PrecisionChoice(dt, "native" if has else "upcast",
                               f"dtype set explicitly; {'native' if has else 'no native'} {dtype} GEMM on this CPU",
                               **base)
    if dtype == "float32" and (gemm in ("native", "upcast") or not packable):
        return PrecisionChoice(torch.float32, "native", "dtype set explicitly", **base)
    key = (dtype, gemm, hidden, ffn, flags, native, packable, fp32_fast_paths)
    if measure is None and key in _DECIDED:  # one measurement per process and shape
        return _DECIDED[key]
    fn = measure or measure_linear(hidden, ffn)
    if dtype == "float32":
        g32, _, ms, why = _fp32_path(fn, gemm, packable)
        choice = PrecisionChoice(torch.float32, g32, f"dtype set explicitly; {why}", measured_ms=ms, **base)
    else:
        choice = _decide(fn, gemm, flags, native, packable, base, fp32_fast_paths)
    if measure is None:
        _DECIDED[key] = choice
    return choice


_DECIDED: dict[tuple, PrecisionChoice] = {}


def _ms(times: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1e3, 3) for k, v in times.items()}


def _fp32_path(measure: MeasureFn, gemm: str, packable: bool) -> tuple[str, float, dict[str, float], str]:
    """fp32's matmul path: ``packed`` (oneDNN, prepacked weights) where available and measured
    faster than torch's fp32 matmul by :data:`MARGIN` (or forced by ``gemm=packed``), else
    ``native``. Returns (gemm, its time in s, the measured times in ms, the reason)."""
    t_native = measure(torch.float32, "native")
    times = {_key(torch.float32, "native"): t_native}
    if not packable:
        return "native", t_native, _ms(times), "no oneDNN weight prepacking in this torch: fp32 native"
    t_packed = measure(torch.float32, "packed")
    times[_key(torch.float32, "packed")] = t_packed
    ratio = t_packed / t_native if t_native > 0 else float("inf")
    if gemm == "packed" or ratio < MARGIN:
        how = "gemm=packed set explicitly" if gemm == "packed" else f"measured {ratio:.2f}x native's time"
        return "packed", t_packed, _ms(times), f"fp32 via oneDNN prepacked weights ({how})"
    return "native", t_native, _ms(times), f"oneDNN prepacked fp32 measured {ratio:.2f}x native's time (not < {MARGIN})"


def _decide(measure: MeasureFn, gemm: str, flags: tuple[str, ...], native: bool, packable: bool,
            base: dict[str, Any], fast_paths: str = "") -> PrecisionChoice:
    g32, t32, ms, why32 = _fp32_path(measure, "packed" if gemm == "packed" else "auto",
                                     packable and gemm in ("auto", "packed"))
    if native and gemm not in ("upcast", "packed"):
        cand, what = (torch.bfloat16, "native"), "native bf16 GEMM (" + "/".join(
            f for f in flags if f in NATIVE_BF16_FLAGS) + ")"
    elif gemm != "upcast":  # no native bf16 GEMM: fp32 (see UPCAST_NOT_AUTO)
        why = f"gemm={gemm} rules out the upcast path" if gemm in ("native", "packed") else UPCAST_NOT_AUTO
        return PrecisionChoice(torch.float32, g32, f"no native bf16 GEMM on this CPU (AVX2-class): fp32 ({why}); "
                               f"{why32}", measured_ms=ms, **base)
    else:  # gemm=upcast asked for with dtype=auto: the check decides between it and fp32
        cand, what = (torch.bfloat16, "upcast"), "no native bf16 GEMM; bf16 via the tiled upcast path"
    tc = measure(*cand)
    ms[_key(*cand)] = round(tc * 1e3, 3)
    ratio = tc / t32 if t32 > 0 else float("inf")
    bar, bar_why = (FAST_FP32_MARGIN, f" (fp32 also runs {fast_paths}, which bf16 gives up)") if fast_paths \
        else (MARGIN, "")
    if ratio < bar:
        return PrecisionChoice(cand[0], cand[1], f"{what} measured {ratio:.2f}x fp32's time (< {bar}{bar_why})",
                               measured_ms=ms, **base)
    return PrecisionChoice(torch.float32, g32, f"{what} measured {ratio:.2f}x fp32's time (not < {bar}{bar_why}): "
                           f"fp32; {why32}", measured_ms=ms, **base)


def fp32_fast_paths(model_cfg: Mapping[str, Any], device: torch.device, attention_backend: str,
                    weight_blocks: str | int) -> str:
    """The fp32-only fast paths an fp32 model would run here, as words for the reason ("" if none):
    kvlab's C paged-decode op (CPU attention backend, CPU ops built) and matmuls over the GGUF
    checkpoint's blocks (that op library too, a GGUF checkpoint, ``weight_blocks`` not off)."""
    from kvlab.kernels import cpu_ops, resolve_backend_name
    from kvlab.models.block_linear import blocks_off_reason

    if device.type != "cpu" or cpu_ops.load() is None:
        return ""
    paths = ["the C decode op"] if resolve_backend_name(attention_backend, device) == "cpu" else []
    if blocks_off_reason(weight_blocks, model_cfg, device, torch.float32) is None:
        paths.append("the GGUF block matmuls")
    return " and ".join(paths)
