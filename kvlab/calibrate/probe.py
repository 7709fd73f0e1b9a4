"""Speed probe: how much slower (or faster) the machine is now than when a profile was taken.

A calibration profile is a snapshot of the machine's speed. On a shared VM that speed drifts by
10-20% between one half hour and the next (docs/simulator.md, "Repeats"), which no step-time
model can foresee. The probe re-times a few of the profile's own grid points (same shapes, same
block sizes, warm-up then shuffled repeats, as ``kvlab.calibrate.grid.measure`` does) and returns
the median ratio now / then; the simulator multiplies its step and host times by it
(``hardware.time_scale``). It reads the machine, never the workload being predicted.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from kvlab.calibrate.grid import design, measure

# A spread of the grid's shapes: lone and batched decodes, prompt prefills, a chunk and a mixed step.
PROBE_POINTS = ("decode1x32", "decode4x256", "decode12x256", "decode24x640", "prefill320", "prefill8x200",
                "chunk128@512", "mixed8x200+prefill128")


def probe(executor: Any, prof: Mapping[str, Any], repeats: int = 2,
          names: tuple[str, ...] = PROBE_POINTS) -> dict[str, Any]:
    """Re-time ``names`` (those the profile measured) on ``executor``; returns ``{"time_scale": median
    of now/then, "points": {name: ratio}}``. Raises ``ValueError`` if the profile has none of them."""
    then = {(r["point"], int(r["block_size"])): float(r["measured_s"]) for r in prof["fit"]["residuals"]}
    # both grids: a quick profile (the tests') measured the quick grid's shapes
    points = list({(p.name, p.block_size): p for p in design(quick=False) + design(quick=True)
                   if p.name in names and (p.name, p.block_size) in then}.values())
    if not points:
        raise ValueError(f"speed probe: the profile measured none of {list(names)}")
    now = measure(executor, points, repeats, warmup=1)
    ratios = {m.point.name: m.median / then[(m.point.name, m.point.block_size)] for m in now}
    return {"time_scale": statistics.median(ratios.values()), "points": ratios}
