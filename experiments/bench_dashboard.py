"""What an open dashboard costs the server (issue 16: at most a 3% throughput drop; not a unit test).

Starts one ``python -m kvlab.serve`` (extra Hydra overrides after ``--``), then runs rounds of
the same load -- ``--clients`` concurrent streaming clients, ``--requests`` completions of
``--max-tokens`` forced tokens in all -- alternately without and with a dashboard subscriber (an
SSE client reading ``/dashboard/stream`` as the page does: the server snapshots the pool at up to
``server.dashboard_hz`` per second only while such a client is connected). Reports output tokens
per second of each round, the medians, the relative drop, the load average before and after, and
how many snapshots the subscriber received. The snapshot's own cost (block map + JSON, engine
thread) is timed in-process for the server's pool size and for 10,000 blocks.

    .venv/bin/python experiments/bench_dashboard.py                         # SmolLM2, prefix allocator
    .venv/bin/python experiments/bench_dashboard.py --rounds 4 -- server.dashboard_hz=10
    .venv/bin/python experiments/bench_dashboard.py --out results/dashboard/bench.json
    .venv/bin/python experiments/bench_dashboard.py --clients 16 --requests 96 --max-tokens 128 -- executor=sim

With ``executor=sim`` (prompts sent as token ids, no model) a step costs well under a millisecond,
so the engine and HTTP overhead dominate: the worst case for the snapshots' relative cost (and
the simulator's pool, sized from the CPU profile's memory, has ~28,000 blocks).

The machine must be otherwise quiet for a 3% comparison to mean anything: the rounds alternate
(off, on, off, on, ...) so that a drift in background load hits both arms alike, and the load
average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(overrides: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "kvlab.serve", f"server.port={port}", *overrides]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass  # not listening yet: poll again until the deadline (a dead process is caught above)
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"server not ready after 300 s; see {log}")


def one_round(base: str, clients: int, requests: int, max_tokens: int, token_ids: bool = False) -> dict[str, float]:
    """``requests`` streamed completions over ``clients`` threads; returns tokens, seconds, tok/s.
    ``token_ids``: send prompts as token ids (the simulator has no tokenizer)."""
    todo = list(range(requests))
    lock = threading.Lock()
    tokens = [0]

    def client() -> None:
        with httpx.Client(timeout=600) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                prompt: Any = f"Request {i}: tell a long story about a lighthouse keeper."
                if token_ids:
                    prompt = [1 + (i * 7 + k) % 4000 for k in range(48)]
                body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
                n = 0
                with c.stream("POST", base + "/v1/completions", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line.startswith("data: {") and '"usage"' in line:
                            usage = json.loads(line[6:]).get("usage")
                            if usage:
                                n = int(usage["completion_tokens"])
                with lock:
                    tokens[0] += n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    return {"tokens": tokens[0], "seconds": dt, "tok_s": tokens[0] / dt}


class Subscriber(threading.Thread):
    """Reads /dashboard/stream like the page does; counts snapshots and bytes."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.snapshots, self.bytes, self.stop = base, 0, 0, threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.base + "/dashboard/stream", timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    self.snapshots += 1
                    self.bytes += len(line)
                if self.stop.is_set():
                    return


def snapshot_cost(num_blocks: int, allocator: str = "prefix") -> dict[str, float]:
    """Time block map + JSON encoding for a pool of ``num_blocks`` blocks, ~90% in use (in-process)."""
    import numpy as np

    from kvlab.allocator import ALLOCATORS
    from kvlab.allocator.block_map import block_map
    from kvlab.dashboard.snapshot import encode
    from kvlab.engine_stats import EngineStats
    from kvlab.request import Request, SamplingParams

    alloc = ALLOCATORS.build(allocator, num_blocks, block_size=16, max_model_len=4096)
    rng = np.random.default_rng(0)
    i = 0
    while alloc.num_free_blocks() > num_blocks // 10:
        toks = [int(t) for t in rng.integers(1, 30_000, int(rng.integers(40, 1200)))]
        seq = Request(f"r{i}", toks, SamplingParams(max_tokens=64, ignore_eos=True), 0.0,
                      expected_output_len=64).seqs[0]
        if alloc.allocate_slots(seq, seq.num_tokens) is None:
            break
        seq.num_computed_tokens = seq.num_tokens
        i += 1
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        json.dumps(encode(block_map(alloc), EngineStats(), allocator), separators=(",", ":"))
        times.append(time.perf_counter() - t0)
    return {"num_blocks": num_blocks, "sequences": i, "median_ms": 1e3 * statistics.median(times),
            "max_ms": 1e3 * max(times)}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="pairs of (off, on) rounds (default 3)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=16, help="requests per round")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "results" / "dashboard" / "bench_dashboard.json"))
    args = p.parse_args(argv)
    overrides = ["allocator=prefix", "kv.swap_space_gib=0", *extra]
    sim = "executor=sim" in overrides
    if sim and not any(o.startswith("hardware=") for o in overrides):
        overrides.append("hardware=cpu")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc, base = start_server(overrides, out.with_suffix(".server.log"))
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        one_round(base, args.clients, args.clients, 8, sim)  # warm-up (first steps, allocator, caches)
        for r in range(args.rounds):
            for arm in ("off", "on"):
                sub = None
                if arm == "on":
                    sub = Subscriber(base)
                    sub.start()
                    time.sleep(0.5)
                res = one_round(base, args.clients, args.requests, args.max_tokens, sim)
                if sub is not None:
                    sub.stop.set()
                    res.update(snapshots=sub.snapshots, snapshot_bytes=sub.bytes)
                res.update(round=r, arm=arm, loadavg=os.getloadavg()[0])
                rounds.append(res)
                print(f"round {r} dashboard {arm:3s}: {res['tok_s']:7.1f} tok/s ({res['tokens']} tokens in "
                      f"{res['seconds']:.1f} s, load {res['loadavg']:.1f})"
                      + (f", {res['snapshots']} snapshots" if arm == "on" else ""), flush=True)
                time.sleep(1.0)  # let the subscriber's connection close before the next round
        health = httpx.get(base + "/health", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    off = statistics.median(x["tok_s"] for x in rounds if x["arm"] == "off")
    on = statistics.median(x["tok_s"] for x in rounds if x["arm"] == "on")
    pairs = [(rounds[2 * i]["tok_s"], rounds[2 * i + 1]["tok_s"]) for i in range(args.rounds)]
    costs = [snapshot_cost(int(health["num_blocks"])), snapshot_cost(10_000)]
    result = {"overrides": overrides, "clients": args.clients, "requests_per_round": args.requests,
              "max_tokens": args.max_tokens, "rounds": rounds, "median_tok_s_off": off, "median_tok_s_on": on,
              "drop_pct": 100 * (off - on) / off, "pair_drops_pct": [100 * (a - b) / a for a, b in pairs],
              "num_blocks": health["num_blocks"], "snapshot_cost": costs,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpu": _cpu()}
    out.write_text(json.dumps(result, indent=2))
    print(f"median: {off:.1f} tok/s without, {on:.1f} tok/s with the dashboard open: drop {result['drop_pct']:+.1f}% "
          f"(per pair: {', '.join(f'{d:+.1f}%' for d in result['pair_drops_pct'])})")
    for c in costs:
        print(f"snapshot of {c['num_blocks']} blocks ({c['sequences']} sequences): median {c['median_ms']:.2f} ms, "
              f"max {c['max_ms']:.2f} ms")
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; wrote {out}")


def _cpu() -> str:
    from kvlab.machine import read_cpuinfo  # the one /proc/cpuinfo parser ({} where there is none)

    return read_cpuinfo().get("model name", "unknown")


if __name__ == "__main__":
    main()
