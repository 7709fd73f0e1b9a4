"""``python -m kvlab.quant [--quick] [--schemes a,b] [--out DIR] [--update-doc]``: compare KV formats.

For every scheme in ``conf/kv_quant/`` (the unquantized ``none`` first): accuracy on the real
model through the engine (perplexity/KL/top-1 by chunked prefill, greedy agreement, passkey
retrieval), then the serving effect at one fixed KV budget on the CPU and in the simulator at
paper scale. Writes ``summary.csv``, ``summary.md``, ``pareto.png``, ``serving.png``,
``config.yaml`` (the settings), ``manifest.json`` and each serving run under ``runs/``; the last
line is ``results: DIR``. docs/quantization.md explains the method.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from kvlab.quant import settings as presets

REPO = Path(__file__).resolve().parent.parent.parent
DOC = REPO / "docs" / "quantization.md"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kvlab.quant", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI: < 3 minutes for six schemes)")
    ap.add_argument("--schemes", default=None, help="comma-separated subset (default: every conf/kv_quant scheme)")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default results/quant/<mode>-<time>)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    ap.add_argument("--passkey-lengths", default=None, help="comma-separated prompt lengths in tokens")
    ap.add_argument("--ppl-contexts", type=int, default=None, help="perplexity contexts of 2048 tokens (full)")
    ap.add_argument("--report-from", type=Path, nargs="+", default=None,
                    help="no runs: merge the summary.csv of these results dirs (first wins per scheme) into --out")
    ap.add_argument("--update-doc", action="store_true", help=f"write the results section into {DOC.name}")
    return ap.parse_args(argv)


def _load() -> str:
    try:
        return "{:.1f}, {:.1f}, {:.1f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def report_from(dirs: list[Path], out: Path, update: bool) -> int:
    """Merge finished comparisons (e.g. two processes that ran different schemes against the same
    baseline) into one summary, plots and results section."""
    import pandas as pd

    from kvlab.quant.report import markdown, plot_all, update_doc, write_summary
    from kvlab.quant.schemes import available_schemes

    frames = [pd.read_csv(d / "summary.csv") for d in dirs]
    base = [f.set_index("scheme")["ppl"].get("none") for f in frames]
    if any(b is None or abs(b / base[0] - 1) > 1e-6 for b in base):
        raise ValueError("--report-from: the runs do not share one baseline (their 'none' perplexities "
                         f"differ: {base}); merge only runs of the same settings and text")
    df = pd.concat(frames).drop_duplicates("scheme", keep="first")
    rank = {n: i for i, n in enumerate(available_schemes())}
    df = df.sort_values("scheme", key=lambda c: c.map(lambda n: rank.get(n, len(rank))))
    out.mkdir(parents=True, exist_ok=True)
    df = write_summary(df.to_dict("records"), out)
    plot_all(df, out)
    metas = [_meta_of(d, df) for d in dirs]
    meta = dict(metas[0])
    if len(metas) > 1:
        meta["load"] = "; ".join(f"{d.name}: {m.get('load')}" for d, m in zip(dirs, metas))
        meta["command"] = meta.get("command", "python -m kvlab.quant") + " (merged from " + ", ".join(
            d.name for d in dirs) + ")"
    section = markdown(df, meta)
    (out / "summary.md").write_text(section)
    if update:
        update_doc(DOC, section)
        print(f"updated {DOC}", flush=True)
    from kvlab.manifest import write_manifest

    write_manifest(out, {"report_from": [str(d) for d in dirs], "schemes": df["scheme"].tolist()},
                   extra={"entry_point": "kvlab.quant --report-from", "load_average": meta.get("load")})
    print(f"results: {out}", flush=True)
    return 0


def _meta_of(d: Path, df: object) -> dict:
    """A run's meta.json, or (a run stopped before its end wrote it) one rebuilt from its
    config.yaml and summary, saying so."""
    if (d / "meta.json").is_file():
        return json.loads((d / "meta.json").read_text())
    import yaml

    from kvlab.manifest import cpu_info
    from kvlab.quant.text import eval_text_sources

    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else {}
    summary = __import__("pandas").read_csv(d / "summary.csv")
    return {"mode": f"{cfg.get('mode', '?')}, stopped after {len(summary)} schemes",
            "date": time.strftime("%Y-%m-%d", time.gmtime((d / "summary.csv").stat().st_mtime)),
            "load": f"{_load()} when the report was made", "cpu": cpu_info().get("model") or "this CPU",
            "text": ", ".join(p.name for p in eval_text_sources()),
            "ppl_tokens": int(summary["ppl_tokens"].iloc[0]) if "ppl_tokens" in summary else "?",
            "command": "python -m kvlab.quant", "sim": f"{cfg.get('sim_model')} on {cfg.get('sim_hardware')}"}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.report_from:
        if args.out is None:
            print("error: --report-from needs --out", file=sys.stderr)
            return 2
        try:
            return report_from(args.report_from, args.out, args.update_doc)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from kvlab.quant.schemes import select_schemes

    s = presets.quick() if args.quick else presets.full()
    if args.threads:
        s.threads = args.threads
    if args.ppl_contexts:
        s.ppl_num_contexts = args.ppl_contexts
    if args.passkey_lengths:
        s.passkey_lengths = [int(x) for x in args.passkey_lengths.split(",")]
    try:
        schemes = select_schemes(args.schemes.split(",") if args.schemes else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    out = args.out or REPO / "results" / "quant" / f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = _load()
    from omegaconf import OmegaConf

    config = {"mode": mode, "schemes": schemes, **s.as_dict()}
    OmegaConf.save(OmegaConf.create(config), out / "config.yaml")
    print(f"kvlab.quant ({mode}): {len(schemes)} schemes: {', '.join(schemes)}; results under {out}", flush=True)

    from kvlab.manifest import cpu_info, write_manifest
    from kvlab.quant.compare import compare
    from kvlab.quant.report import markdown, plot_all, update_doc, write_summary

    rows, meta = compare(schemes, s, out, on_row=lambda r: write_summary(r, out))

    df = write_summary(rows, out)
    plot_all(df, out)
    cpu = cpu_info().get("model") or "this CPU"
    meta.update(mode=mode, date=time.strftime("%Y-%m-%d", time.gmtime()), cpu=cpu,
                load=f"{load_start} at start, {_load()} at end",
                command="python -m kvlab.quant" + (" --quick" if args.quick else ""),
                sim=f"{s.sim_model} on {s.sim_hardware}")
    section = markdown(df, meta)
    (out / "summary.md").write_text(section)
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    if args.update_doc:
        update_doc(DOC, section)
        print(f"updated {DOC}", flush=True)
    shutil.rmtree(out / ".ref", ignore_errors=True)
    write_manifest(out, config, started=started, extra={"entry_point": "kvlab.quant", "load_average": meta["load"]})
    print(df[["scheme", "bytes_per_token", "capacity_tokens", "ppl_delta_pct", "kl_mean", "top1_agreement",
              "greedy_match_tokens", "passkey_accuracy", "output_throughput"]].to_string(index=False), flush=True)
    print(f"took {(time.time() - started) / 60:.1f} min", flush=True)
    print(f"results: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
