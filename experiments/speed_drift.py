"""How fast this machine's speed drifts: a time series of four fixed step shapes on the real executor.

The calibrated simulator (docs/simulator.md, "Calibrated mode") predicts the real executor from a
profile of the machine's step times. On a shared VM those times move while nothing in kvlab
changes; this script shows by how much and how fast. It loads the executor the profile was made
with (model, dtype, block rows), then re-times four of the profile's grid shapes (a lone decode,
12 and 24 decodes, a 320-token prefill) back to back, in a shuffled order each pass, for
``--minutes``, and writes one row per timed step (``t`` seconds since the start, ``point``,
``seconds``). The summary it prints: each shape's 30-second medians relative to its overall median
(slow drift), the median within-window IQR / median (fast jitter) and the correlation of the
shapes' window medians (do they drift together?). ``--points`` picks other grid shapes. Not a unit test.

    .venv/bin/python experiments/speed_drift.py --threads 2 --minutes 5 --out /tmp/drift_t2.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvlab.calibrate.calibrate import build_real_executor, profiled_executor_overrides  # noqa: E402
from kvlab.calibrate.grid import design, measure  # noqa: E402
from kvlab.calibration_profile import load_profile  # noqa: E402

POINTS = ("decode1x32", "decode12x256", "decode24x640", "prefill320")
PROFILE = Path(__file__).resolve().parents[1] / "results" / "calibration" / "smollm2-135m-float32-cpu.json"


def summarize(df: pd.DataFrame, window_s: float = 30.0) -> tuple[pd.DataFrame, dict[str, float]]:
    """(per-window median / overall median, per shape; median within-window IQR / median, per shape)."""
    df = df.assign(win=(df["t"] // window_s).astype(int))
    med = df.pivot_table(index="win", columns="point", values="seconds", aggfunc="median")
    g = df.groupby(["win", "point"])["seconds"]
    jitter = ((g.quantile(0.75) - g.quantile(0.25)) / g.median()).groupby("point").median()
    return med / df.groupby("point")["seconds"].median(), jitter.to_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", type=Path, default=PROFILE, help="calibration profile whose executor to load")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", type=Path, required=True, help="CSV of every timed step")
    ap.add_argument("--points", default=",".join(POINTS),
                    help="comma-separated grid shapes to time (default: %(default)s)")
    args = ap.parse_args()
    names = args.points.split(",")
    unknown = sorted(set(names) - {p.name for p in design()})
    if unknown:
        ap.error(f"--points: unknown shape(s) {unknown}; choose from {sorted(p.name for p in design())}")
    prof = load_profile(args.profile)
    ex = build_real_executor(profiled_executor_overrides(prof, args.threads))
    pts = [p for p in design() if p.name in names]
    measure(ex, pts, 0, warmup=2)
    rows, t0, last = [], time.time(), 0.0
    while (now := time.time() - t0) < args.minutes * 60:
        for m in measure(ex, pts, 1, warmup=0, seed=len(rows)):
            rows.append({"t": round(time.time() - t0, 2), "point": m.point.name, "seconds": m.times[0]})
        if now - last >= 30:
            print(f"{now / 60:.1f} / {args.minutes} min, {len(rows)} steps timed", flush=True)
            last = now
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    drift, jitter = summarize(df)
    print("30-s window medians / overall median:\n" + drift.round(3).to_string())
    print("median within-window IQR / median:", {k: round(v, 3) for k, v in jitter.items()})
    print("correlation of the window medians:\n" + drift.corr().round(2).to_string())
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
