"""``python -m kvlab.replay``: hit rate of every eviction policy and of Belady's optimum vs cache size.

Usage::

    python -m kvlab.replay workload=chat                     # the workload's prompts in arrival order
    python -m kvlab.replay workload=shared_prefix source=run # admissions of a simulator run
    python -m kvlab.replay workload=chat workload.num_requests=300 capacities=64,256,1024 out=DIR

Arguments are ``key=value``: ``workload`` (a ``conf/workload`` name) and ``workload.<key>``
overrides; ``source`` (``workload`` | ``run``: through the engine with ``executor=sim``,
``allocator=prefix``, ``model`` / ``hardware`` as named); ``block_size`` (16); ``policies``
(comma list; default every registered one); ``capacities`` (comma list of blocks; default 8
sizes from 1/64 of the trace's distinct blocks to all of them); ``seed``; ``out`` (default
``results/replay/<workload>-<timestamp>``). Writes ``hit_rates.csv``, ``hit_rates.png``,
``trace_stats.json``, ``config.json`` and ``manifest.json`` (plus ``trace.json`` with
``save_trace=true``; ``trace=PATH`` replays a saved trace instead of recording one); the last line
printed is ``results: DIR``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from kvlab.allocator.eviction import EVICTION
from kvlab.replay.simulate import belady, simulate_policy
from kvlab.replay.trace import BlockTrace, trace_from_prompts, trace_from_run

DEFAULTS: dict[str, Any] = {"workload": "chat", "source": "workload", "block_size": 16, "policies": None,
                            "capacities": None, "seed": 0, "out": None, "model": "opt-13b",
                            "hardware": "a100-40gb", "scheduler": "fcfs", "save_trace": "false", "trace": None}
SOURCES = ("workload", "run")


def parse_args(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` arguments -> (options, ``workload.*`` overrides). ValueError names the key."""
    opts = dict(DEFAULTS)
    wl: list[str] = []
    for a in argv:
        if "=" not in a:
            raise ValueError(f"argument {a!r}: expected key=value; keys: {', '.join(DEFAULTS)}, workload.<key>")
        k, v = a.split("=", 1)
        if k.startswith("workload."):
            wl.append(a)
        elif k in DEFAULTS:
            opts[k] = v
        else:
            raise ValueError(f"unknown key {k!r}; choose one of: {', '.join(DEFAULTS)}, workload.<key>")
    if opts["source"] not in SOURCES:
        raise ValueError(f"source={opts['source']!r} is unknown; choose one of: {', '.join(SOURCES)}")
    names = EVICTION.names()
    pol = names if opts["policies"] is None else [p for p in str(opts["policies"]).split(",") if p]
    for p in pol:
        if p not in names:
            raise ValueError(f"policies: {p!r} is unknown; choose from: {', '.join(names)}")
    opts["policies"] = pol
    opts["block_size"] = int(opts["block_size"])
    opts["seed"] = int(opts["seed"])
    if opts["capacities"] is not None:
        opts["capacities"] = [int(c) for c in str(opts["capacities"]).split(",") if c]
        if not opts["capacities"] or min(opts["capacities"]) < 1:
            raise ValueError("capacities: a comma list of block counts >= 1")
    return opts, wl


def compose(opts: dict[str, Any], wl: list[str]) -> dict[str, Any]:
    from kvlab.llm import compose_config

    ov = [f"workload={opts['workload']}", f"hardware={opts['hardware']}", f"seed={opts['seed']}",
          f"allocator.block_size={opts['block_size']}", "show_progress=true", *wl]
    return compose_config(opts["model"], "prefix", opts["scheduler"], "sim", overrides=ov)


def record(cfg: dict[str, Any], opts: dict[str, Any]) -> BlockTrace:
    from kvlab.workloads import build_workload

    model = cfg["model"]
    max_len = int(cfg.get("kv", {}).get("max_model_len") or model["max_model_len"])
    workload = build_workload(cfg["workload"], seed=opts["seed"], vocab_size=int(model["vocab_size"]),
                              max_model_len=max_len)
    print(f"[replay] {workload.description}", file=sys.stderr)
    if opts["source"] == "workload":
        return trace_from_prompts((r.prompt_token_ids for r in workload.requests), opts["block_size"])
    return trace_from_run(cfg, workload.requests)


def default_capacities(trace: BlockTrace) -> list[int]:
    u = max(trace.num_blocks, 1)
    return sorted({max(1, round(u * f)) for f in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)})


def sweep(trace: BlockTrace, capacities: list[int], policies: list[str]) -> list[dict[str, Any]]:
    rows = []
    total = len(capacities) * (len(policies) + 1)
    done = 0
    t0 = time.time()
    for cap in capacities:
        for res in [belady(trace, cap), *(simulate_policy(trace, cap, p) for p in policies)]:
            done += 1
            rows.append({"capacity_blocks": cap, "policy": res.policy, "hits": res.hits,
                         "accesses": res.accesses, "hit_rate": res.hit_rate})
            print(f"[replay] {done}/{total} capacity={cap} {res.policy}: hit rate {res.hit_rate:.3f} "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for pol in dict.fromkeys(r["policy"] for r in rows):
        pts = [(r["capacity_blocks"], r["hit_rate"]) for r in rows if r["policy"] == pol]
        style = {"color": "black", "linestyle": "--", "linewidth": 2} if pol == "belady" else {"marker": "o"}
        ax.plot(*zip(*pts), label="Belady (offline optimum)" if pol == "belady" else pol, **style)
    ax.set_xscale("log")
    ax.set_xlabel("prefix cache size (blocks)")
    ax.set_ylabel("block hit rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from kvlab.manifest import write_manifest

    started = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        opts, wl = parse_args(argv)
        cfg = compose(opts, wl)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(opts["out"] or f"results/replay/{opts['workload']}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    trace = BlockTrace.load(opts["trace"]) if opts["trace"] else record(cfg, opts)
    if str(opts["save_trace"]).lower() in ("1", "true", "yes"):
        trace.save(out / "trace.json")
    caps = opts["capacities"] or default_capacities(trace)
    stats = {"accesses": trace.num_accesses, "distinct_blocks": trace.num_blocks, "requests": len(trace.accesses),
             "infinite_cache_hit_rate": trace.compulsory_hits() / max(trace.num_accesses, 1),
             "block_size": trace.block_size, "source": opts["source"]}
    print(f"[replay] trace: {stats}", file=sys.stderr)
    rows = sweep(trace, caps, opts["policies"])
    pd.DataFrame(rows).to_csv(out / "hit_rates.csv", index=False)
    (out / "trace_stats.json").write_text(json.dumps(stats, indent=2))
    (out / "config.json").write_text(json.dumps({"replay": opts, "workload_overrides": wl, "config": cfg},
                                                indent=2, default=str))
    plot(rows, out / "hit_rates.png", f"{opts['workload']} ({opts['source']}): {trace.num_blocks} distinct blocks, "
                                      f"{trace.num_accesses} accesses")
    write_manifest(out, cfg, started=started, extra={"replay": {k: v for k, v in opts.items() if k != "out"}})
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
