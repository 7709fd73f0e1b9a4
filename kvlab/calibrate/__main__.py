"""``python -m kvlab.calibrate [--quick] [--out PATH]`` and ``python -m kvlab.calibrate --validate PATH``.

Calibrate: profiles the real executor on this machine, fits the simulator's calibrated cost
model and writes a profile; the last line printed is ``profile: PATH``. Validate: runs held-out
workloads through the real executor and the calibrated simulator and writes the error table; the
last line printed is ``validation: PATH`` (a CSV beside the profile unless ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kvlab.calibrate.undisturbed import DEFAULT_MAX_STEAL, DEFAULT_RERUNS
from kvlab.manifest import write_manifest


def manifest_name(output: str | Path) -> str:
    """``<output stem>.manifest.json``: profiles and tables share ``results/calibration/``, so each
    output gets its own manifest beside it (a calibration's is not overwritten by its validation)."""
    return f"{Path(output).stem}.manifest.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvlab.calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("--validate", metavar="PROFILE", type=Path, default=None,
                    help="validate this profile on held-out workloads instead of calibrating")
    ap.add_argument("--quick", action="store_true", help="small grid / fewer workloads (about a minute)")
    ap.add_argument("--out", type=Path, default=None,
                    help="profile path (calibrate) or table CSV (validate); default under results/calibration/")
    ap.add_argument("--model", default="smollm2-135m", help="conf/model name with weights (default smollm2-135m)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per grid point (default 4; quick 2)")
    ap.add_argument("--base-hardware", default=None,
                    help="conf/hardware yaml for swap/copy constants (default cpu; required on cuda)")
    ap.add_argument("--force", action="store_true", help="validate: accept a profile from another machine")
    ap.add_argument("--real-repeats", type=int, default=1, metavar="N",
                    help="validate: run each workload N times on the real executor, compare with the median "
                         "run and report the real runs' own spread (the machine's noise floor)")
    ap.add_argument("--speed-probe", action="store_true",
                    help="validate: time fixed step shapes against the profile's model before and after every "
                         "real run and predict that run at the mean measured scales, one per speed regime "
                         "(hardware.time_scale, time_scale_dense_decode, time_scale_prefill: how much slower "
                         "the machine is now)")
    ap.add_argument("--max-steal", type=float, default=DEFAULT_MAX_STEAL, metavar="PCT",
                    help="a real validation run that loses more than PCT%% of its CPU time to the hypervisor "
                         f"(steal in /proc/stat) is discarded and run again (default {DEFAULT_MAX_STEAL:g})")
    ap.add_argument("--steal-reruns", type=int, default=DEFAULT_RERUNS, metavar="N",
                    help=f"validate: at most N such reruns per workload (default {DEFAULT_RERUNS}; 0: keep every run)")
    ap.add_argument("--quiet-wait", type=float, default=None, metavar="S",
                    help="first wait up to S seconds (idle) for a busy moment's CPU steal to fall under "
                         "--max-steal, and again before each steal rerun (default 300; --quick: 0)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Hydra override of the model/executor, repeatable (recorded in the profile), "
                         "e.g. --override model.checkpoint=random")
    args = ap.parse_args(argv)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else 0.0 if args.quick else 300.0
    started = time.time()
    try:
        if args.validate is not None:
            from kvlab.calibrate.validate import markdown, validate

            out = args.out or args.validate.with_name(args.validate.stem + ("-validation-quick.csv" if args.quick
                                                                             else "-validation.csv"))
            table = validate(args.validate, quick=args.quick, force=args.force, out_csv=out,
                             real_repeats=args.real_repeats, speed_probe=args.speed_probe,
                             max_steal=args.max_steal, steal_reruns=args.steal_reruns,
                             quiet_wait_s=quiet_wait)
            print(markdown(table))
            print(f"load average during validation: {table.attrs['load_average']}")
            write_manifest(Path(out).parent, vars(args), name=manifest_name(out), started=started,
                           extra={"entry_point": "kvlab.calibrate --validate"})
            print(f"validation: {out}", flush=True)
            return 0
        from kvlab.calibrate.calibrate import calibrate

        path = calibrate(model=args.model, dtype=args.dtype, device=args.device, threads=args.threads,
                         quick=args.quick, repeats=args.repeats, out=args.out, base_hardware=args.base_hardware,
                         extra=args.override, max_steal=args.max_steal, quiet_wait_s=quiet_wait)
        write_manifest(Path(path).parent, vars(args), name=manifest_name(path), started=started,
                       extra={"entry_point": "kvlab.calibrate"})
        print(f"profile: {path}", flush=True)
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
