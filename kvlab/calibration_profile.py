"""Calibration profile files: what ``python -m kvlab.calibrate`` writes and ``hardware=calibrated`` reads.

A profile is one small JSON file: the machine it was measured on (:mod:`kvlab.machine`),
the model, dtype and threads, the load average around the measurement, the fitted coefficients
of :class:`~kvlab.executor.cost_calibrated.CalibratedCostModel` with their units and meanings,
the host (engine) overhead, the KV budget of the profiled executor, the hardware constants the
simulator still needs for swaps and copies, and the fit's residuals on every grid point.

Pure Python, no torch: :mod:`kvlab.hardware` reads profiles through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvlab.machine import fingerprint, mismatches

FORMAT = "kvlab-calibration/1"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ProfileMismatch(ValueError):
    """The profile was measured on another machine, model or dtype (and ``force`` was not set)."""


def write_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write ``profile`` as indented JSON (parents created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"format": FORMAT, **profile}, indent=1, default=float) + "\n")
    return p


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a profile; ``FileNotFoundError``/``ValueError`` with the path when missing or malformed."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"hardware.profile={str(path)!r}: no such file (make one with "
                                "`python -m kvlab.calibrate`)")
    try:
        prof = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"hardware.profile={str(path)!r}: not a JSON profile ({e})") from e
    if not isinstance(prof, dict) or prof.get("format") != FORMAT:
        raise ValueError(f"hardware.profile={str(path)!r}: not a kvlab calibration profile "
                         f"(format {prof.get('format') if isinstance(prof, dict) else None!r}, want {FORMAT!r})")
    for key in ("machine", "model", "dtype", "coefficients", "host_overhead", "hardware"):
        if key not in prof:
            raise ValueError(f"hardware.profile={str(path)!r}: missing key {key!r}")
    prof["path"] = str(p)
    return prof


def provenance_problems(prof: dict[str, Any], *, model: str | None = None, dtype_bytes: int | None = None,
                        machine: dict[str, Any] | None = None) -> list[str]:
    """Every way ``prof`` does not describe (this machine, ``model``, ``dtype_bytes``)."""
    device = str(prof["machine"].get("device", "cpu"))
    here = machine if machine is not None else fingerprint(device)
    problems = [f"machine {m}" for m in mismatches(prof["machine"], here)]
    if model is not None and model != prof["model"]:
        problems.append(f"model: profile {prof['model']!r}, run {model!r}")
    want = DTYPE_BYTES.get(str(prof["dtype"]))
    if dtype_bytes is not None and want is not None and int(dtype_bytes) != want:
        problems.append(f"dtype: profile {prof['dtype']} ({want} bytes), run model.dtype_bytes={dtype_bytes}")
    return problems


def check_provenance(prof: dict[str, Any], *, model: str | None = None, dtype_bytes: int | None = None,
                     force: bool = False, machine: dict[str, Any] | None = None) -> list[str]:
    """Raise :class:`ProfileMismatch` listing the problems unless ``force``; returns them."""
    problems = provenance_problems(prof, model=model, dtype_bytes=dtype_bytes, machine=machine)
    if problems and not force:
        raise ProfileMismatch(
            f"hardware.profile={prof.get('path', '?')!r} does not describe this run: " + "; ".join(problems)
            + ". Calibrate here (`python -m kvlab.calibrate`) or pass hardware.force=true to use it anyway.")
    return problems


def describe(prof: dict[str, Any]) -> str:
    """One line naming the profile's machine, model, dtype, threads and fit quality."""
    m = prof["machine"]
    dev = m.get("gpu_name") if m.get("device") == "cuda" else m.get("cpu_model")
    fit = prof.get("fit", {})
    return (f"{dev} ({m.get('device')}), {prof['model']} {prof['dtype']}, {prof.get('threads')} threads, "
            f"fit RMS rel. error {100 * float(fit.get('rms_rel_error', float('nan'))):.1f}% "
            f"on {fit.get('num_points', '?')} points, load {prof.get('load_average', {}).get('before')}"
            + (f", CPU steal {prof['steal_pct']:.1f}%" if prof.get("steal_pct") is not None else ""))
