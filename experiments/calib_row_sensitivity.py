"""How much one validation row's simulated metrics move when the calibrated step time moves.

``python experiments/calib_row_sensitivity.py PROFILE [--row "poisson 2x saturation"] [--scales 0.96 1 1.04]``
runs the calibrated simulator (no real model, seconds) on one held-out workload of
``kvlab.calibrate --validate``, with ``hardware.time_scale`` / ``time_scale_dense_decode`` /
``time_scale_prefill`` all set to each scale in turn, at the rate the validation used (derived
from the profile, as there). Prints one line per scale: output throughput, mean TTFT, mean TPOT,
mean batch. It answers whether a row's miss could come from a few-percent step-time error
amplified by the queue (docs/simulator.md, "A second machine").
"""

from __future__ import annotations

import argparse

from kvlab.calibrate.runs import compose, run_workload
from kvlab.calibrate.validate import sim_overrides, workloads
from kvlab.calibration_profile import load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--row", default="poisson 2x saturation")
    ap.add_argument("--rate", type=float, required=True, help="the row's rate in req/s (the validation CSV's)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.96, 0.98, 1.0, 1.02, 1.04])
    args = ap.parse_args()
    prof = load_profile(args.profile)
    ov = dict((n, o) for n, o, _ in workloads(False))[args.row]
    base = sim_overrides(prof)
    for s in args.scales:
        scale = [f"hardware.{k}={s}" for k in ("time_scale", "time_scale_dense_decode", "time_scale_prefill")]
        m = run_workload(compose(base + ov + [f"workload.rate={args.rate}"] + scale))["metrics"]
        print(f"scale {s:.2f}: output {m['output_throughput']:.1f} tok/s, TTFT {m['mean_ttft_ms']:.0f} ms, "
              f"TPOT {m['mean_tpot_ms']:.1f} ms, batch {m['mean_batched_requests']:.2f}", flush=True)


if __name__ == "__main__":
    main()
