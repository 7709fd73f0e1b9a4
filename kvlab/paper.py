"""``python -m kvlab.paper [--quick] [--out DIR]``: reproduce the vLLM paper's figures.

Runs every figure's experiment (``conf/experiment/paper_*.yaml``) on the simulator, in parallel
(joblib, ``--jobs``, default 2) with a progress bar, then writes the kvlab-vs-paper tables, the
figures and the report. Full mode (default): runs under ``results/paper/full``, figures in
``paper/figures``, report ``paper/README.md``. ``--quick``: shorter traces and fewer rates, all
under ``results/paper/quick`` (or ``--out``). ``--report-only`` redraws from existing points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvlab.paper", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced version (< 5 min on 2 cores)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output dir (runs, tables, figures/, README.md); default: the repo's paper/")
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs (joblib processes)")
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs (row.json) under the output dir")
    ap.add_argument("--report-only", action="store_true", help="redraw tables/figures/report from points.csv")
    args = ap.parse_args(argv)

    from kvlab.paperlib import figures, report, tables
    from kvlab.paperlib.runner import run_all

    mode = "quick" if args.quick else "full"
    if args.out is not None:
        root, fig_dir, readme = args.out, args.out / "figures", args.out / "README.md"
    elif args.quick:
        root = REPO / "results" / "paper" / "quick"
        fig_dir, readme = root / "figures", root / "README.md"
    else:
        root = REPO / "results" / "paper" / "full"
        fig_dir, readme = REPO / "paper" / "figures", REPO / "paper" / "README.md"
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    t0 = time.perf_counter()
    timing = root / "timing.json"
    if args.report_only:
        seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float("nan")
        points = pd.read_csv(root / "points.csv")
    else:
        res = run_all(root, mode, n_jobs=args.jobs, resume=not args.fresh)
        points = res["points"]
        seconds = time.perf_counter() - t0
    t = tables.write_all(root)
    paths = figures.draw_all(points, t, fig_dir)
    if not args.report_only:
        seconds = time.perf_counter() - t0
        timing.write_text(json.dumps({"mode": mode, "seconds": seconds, "jobs": args.jobs}))
    rel_root = root.relative_to(REPO) if root.is_relative_to(REPO) else root
    rel_fig = Path(fig_dir).relative_to(readme.parent) if fig_dir.is_relative_to(readme.parent) else fig_dir
    report.write(rel_root, t, mode, seconds, readme, str(rel_fig))
    from kvlab.manifest import write_manifest

    write_manifest(root, {"mode": mode, "jobs": args.jobs, "fresh": args.fresh, "report_only": args.report_only},
                   started=started, extra={"entry_point": "kvlab.paper"})
    print(f"figures: {len(paths)} in {fig_dir}\nreport: {readme}\ntook {seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
