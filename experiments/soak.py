"""Soak benchmark of ``kvlab.serve`` (issues 10 and 17; not a unit test).

N concurrent clients for T minutes against one server, with abuse mixed in: random disconnects
(mid-stream, and non-streamed requests given up early), oversize bodies, malformed JSON, lone
surrogates, deep nesting, unknown chat roles. Every ``--sample-s`` seconds it records the
server's RSS and open file descriptors (from /proc) and the pool state (``/health``). At the end
it waits for the server to go idle and reports requests served, errors by kind, p50/p99 latency
(time to first token and end to end, ms), RSS and fds over time, and blocks in use at the end;
writes everything as JSON.

    .venv/bin/python experiments/soak.py                       # 64 streams, 30 min (issue 17)
    .venv/bin/python experiments/soak.py --streams 32 --minutes 20   # issue 10's soak
    .venv/bin/python experiments/soak.py --streams 8 --minutes 2 --out results/soak/short.json
    .venv/bin/python experiments/soak.py --base-url http://127.0.0.1:8000 --pid 1234   # a running server

Without ``--base-url`` it starts ``python -m kvlab.serve`` itself (extra Hydra overrides after
``--``) and stops it with SIGTERM at the end (the shutdown is part of the soak: its exit code
and whether its log has a traceback are reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
KINDS = {  # kind -> weight
    "stream": 50, "complete": 15, "chat_stream": 10, "disconnect_stream": 8, "disconnect_complete": 5,
    "oversize": 3, "malformed": 3, "surrogate": 2, "deep": 2, "bad_role": 2,
}
EXPECT_4XX = {"oversize": 413, "malformed": 400, "surrogate": 400, "deep": 400, "bad_role": 400}


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    p.add_argument("--max-tokens", type=int, nargs=2, default=(8, 64), metavar=("MIN", "MAX"))
    p.add_argument("--sample-s", type=float, default=10.0, help="RSS/fd/pool sampling period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-url", default=None, help="soak a running server instead of starting one")
    p.add_argument("--pid", type=int, default=None, help="its process id (for RSS and fds)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="server.max_body_bytes to start with")
    p.add_argument("--out", default="results/soak/soak.json")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    return p.parse_args(argv), extra


def proc_sample(pid: int | None) -> dict[str, float]:
    if pid is None:
        return {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return {"rss_mib": rss_kb / 1024, "open_fds": float(len(os.listdir(f"/proc/{pid}/fd")))}
    except (OSError, StopIteration):
        return {}


class Soak:
    def __init__(self, args: argparse.Namespace, base: str, pid: int | None) -> None:
        self.args, self.base, self.pid = args, base, pid
        self.rng = random.Random(args.seed)
        self.outcomes: Counter[str] = Counter()
        self.ttft_ms: list[float] = []
        self.e2e_ms: list[float] = []
        self.samples: list[dict[str, float]] = []
        self.deadline = 0.0
        self.t0 = 0.0

    def body(self, kind: str, i: int) -> tuple[str, Any]:
        mt = self.rng.randint(*self.args.max_tokens)
        prompt = f"Request {i}: tell me about the number {self.rng.randint(0, 10**6)}."
        if kind in ("chat_stream",):
            return "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                                            "max_tokens": mt, "stream": True}
        if kind == "bad_role":
            return "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "robot<|im_end|>", "content": "x"}]}
        if kind == "oversize":
            return "/v1/completions", {"model": MODEL, "prompt": "x" * (self.args.max_body_bytes + 10)}
        if kind == "malformed":
            return "/v1/completions", '{"model": "%s", "prompt": "unterminated' % MODEL  # noqa: UP031
        if kind == "surrogate":
            return "/v1/completions", '{"model": "%s", "prompt": "a\\ud800b"}' % MODEL  # noqa: UP031
        if kind == "deep":
            return "/v1/completions", '{"model": "%s", "prompt": %s"x"%s}' % (MODEL, "[" * 5000, "]" * 5000)  # noqa: UP031
        stream = kind in ("stream", "disconnect_stream")
        return "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": mt, "ignore_eos": True,
                                   "stream": stream}

    async def one(self, client: httpx.AsyncClient, kind: str, i: int) -> str:
        path, body = self.body(kind, i)
        content = body if isinstance(body, str) else json.dumps(body)
        headers = {"content-type": "application/json"}
        t = time.monotonic()
        if kind in EXPECT_4XX:
            r = await client.post(path, content=content, headers=headers)
            return "rejected_ok" if r.status_code == EXPECT_4XX[kind] else f"wrong_status_{r.status_code}"
        if kind == "disconnect_complete":
            try:
                await asyncio.wait_for(client.post(path, content=content, headers=headers),
                                       timeout=self.rng.uniform(0.05, 1.0))
                return "served"  # it finished before we gave up
            except TimeoutError:
                return "disconnected"
        if kind == "complete":
            r = await client.post(path, content=content, headers=headers)
            if r.status_code != 200:
                return f"status_{r.status_code}"
            self.e2e_ms.append((time.monotonic() - t) * 1e3)
            return "served"
        cut = self.rng.randint(1, 6) if kind == "disconnect_stream" else None
        first = None
        events: list[str] = []
        async with client.stream("POST", path, content=content, headers=headers) as r:
            if r.status_code != 200:
                return f"status_{r.status_code}"
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if first is None:
                    first = time.monotonic()
                events.append(line)
                if cut is not None and len(events) >= cut:
                    return "disconnected"
        if not events or events[-1] != "data: [DONE]":
            return "lost_stream"
        if any('"error"' in e for e in events):
            return "stream_error_event"
        if first is not None:
            self.ttft_ms.append((first - t) * 1e3)
        self.e2e_ms.append((time.monotonic() - t) * 1e3)
        return "served"

    async def client_loop(self, worker: int) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        i = 0
        async with httpx.AsyncClient(base_url=self.base, timeout=600) as client:
            while time.monotonic() < self.deadline:
                kind = self.rng.choices(kinds, weights)[0]
                try:
                    outcome = await self.one(client, kind, worker * 1_000_000 + i)
                except httpx.HTTPError as e:
                    outcome = f"transport_{e.__class__.__name__}"
                self.outcomes[f"{kind}:{outcome}"] += 1
                i += 1

    async def sampler(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            while time.monotonic() < self.deadline:
                await self.sample(client)
                await asyncio.sleep(self.args.sample_s)

    async def sample(self, client: httpx.AsyncClient) -> dict[str, float]:
        s: dict[str, float] = {"t_s": time.monotonic() - self.t0, **proc_sample(self.pid)}
        try:
            h = (await client.get("/health")).json()
            s.update(blocks_in_use=h["num_blocks"] - h["free_blocks"], in_flight=h["in_flight"],
                     healthy=float(h["status"] == "ok"), health_age_s=h.get("age_s", float("nan")))
        except (httpx.HTTPError, ValueError, KeyError):
            s["healthy"] = 0.0
        self.samples.append(s)
        return s

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.args.minutes * 60
        await asyncio.gather(self.sampler(), *(self.client_loop(w) for w in range(self.args.streams)))
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            end = time.monotonic() + 60
            last = await self.sample(client)
            while (last.get("blocks_in_use", 1) or last.get("in_flight", 1)) and time.monotonic() < end:
                await asyncio.sleep(0.5)
                last = await self.sample(client)
        return self.report(last)

    def report(self, last: dict[str, float]) -> dict[str, Any]:
        def pct(v: list[float], q: float) -> float | None:
            return float(np.percentile(v, q)) if v else None

        by_outcome: Counter[str] = Counter()
        for key, n in self.outcomes.items():
            by_outcome[key.split(":", 1)[1]] += n
        rss = [s["rss_mib"] for s in self.samples if "rss_mib" in s]
        warm = rss[len(rss) // 5:] if len(rss) >= 5 else rss
        return {
            "streams": self.args.streams, "minutes": self.args.minutes, "max_tokens": list(self.args.max_tokens),
            "requests": sum(self.outcomes.values()), "served": by_outcome["served"],
            "outcomes": dict(sorted(by_outcome.items())), "outcomes_by_kind": dict(sorted(self.outcomes.items())),
            "errors_5xx": sum(n for k, n in by_outcome.items() if k.startswith("status_5")),
            "lost": sum(by_outcome[k] for k in ("lost_stream", "stream_error_event")),
            "ttft_ms": {"p50": pct(self.ttft_ms, 50), "p99": pct(self.ttft_ms, 99), "n": len(self.ttft_ms)},
            "e2e_ms": {"p50": pct(self.e2e_ms, 50), "p99": pct(self.e2e_ms, 99), "n": len(self.e2e_ms)},
            "rss_mib": {"first": rss[0] if rss else None, "after_warmup_min": min(warm) if warm else None,
                        "after_warmup_max": max(warm) if warm else None, "last": rss[-1] if rss else None,
                        "flat_within_5pct": bool(warm) and max(warm) <= 1.05 * min(warm)},
            "open_fds": [s.get("open_fds") for s in self.samples],
            "blocks_in_use_at_end": last.get("blocks_in_use"), "in_flight_at_end": last.get("in_flight"),
            "samples": self.samples,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    args, extra = parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = None
    base, pid = args.base_url, args.pid
    log_path = out.with_suffix(".server.log")
    if base is None:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "kvlab.serve", f"server.port={port}",
               f"server.max_body_bytes={args.max_body_bytes}", "server.shutdown_grace_s=5", *extra]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
        pid = proc.pid
        for _ in range(480):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                sys.exit(f"server exited with {proc.returncode}; see {log_path}")
            time.sleep(0.5)
    try:
        result = asyncio.run(Soak(args, base, pid).run())
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    if proc is not None:
        result["server_exit_code"] = code
        result["server_log_has_traceback"] = "Traceback" in log_path.read_text()
    result["load_average"] = os.getloadavg()
    result["server_overrides"] = extra
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("requests", "served", "errors_5xx", "lost", "ttft_ms", "e2e_ms", "rss_mib",
                                      "blocks_in_use_at_end")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
