"""``python -m kvlab.bench serve``: a load generator for any OpenAI-compatible server (vLLM-style).

Requests come from kvlab's workloads (:func:`kvlab.workloads.build_workload`; token-id prompts
go to ``/v1/completions`` as ``prompt: [ids]``, text prompts as text) with
``max_tokens = output_len`` and ``ignore_eos`` (kvlab and vLLM both accept it), streamed over
SSE with ``httpx``. Arrivals are Poisson at ``--request-rate`` (req/s; ``inf`` sends all at
once) and/or capped at ``--max-concurrency`` requests in flight. Prints a vLLM-like table and
writes ``config.json`` + ``metrics.json`` (see :mod:`kvlab.bench.stats`) into ``--result-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from kvlab.bench.stats import RequestResult, format_table, summarize
from kvlab.workloads import TraceRequest, build_workload


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kvlab.bench serve", description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root (without /v1)")
    ap.add_argument("--model", default=None, help="model id (default: the first of GET /v1/models)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--workload", default="uniform", help="a kvlab workload name (conf/workload/<name>.yaml)")
    ap.add_argument(
        "--workload-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra workload keys, e.g. prompt_len_max=128 (repeatable; values are JSON or text)",
    )
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument(
        "--request-rate", type=float, default=math.inf, help="Poisson rate in req/s (inf: no pacing)"
    )
    ap.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--vocab-size", type=int, default=49152, help="token-id range of synthetic prompts")
    ap.add_argument("--max-model-len", type=int, default=None, help="default: the server's, else 2048")
    ap.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos (other servers)")
    ap.add_argument("--result-dir", type=Path, default=None, help="default: results/serve_bench/<timestamp>")
    ap.add_argument("--label", default=None, help="a name for this run, stored in config.json")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    return ap.parse_args(argv)


def _value(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def load_requests(args: argparse.Namespace, max_model_len: int) -> list[TraceRequest]:
    cfg: dict[str, Any] = {"name": args.workload, "num_requests": args.num_requests}
    for kv in args.workload_opt:
        key, _, val = kv.partition("=")
        cfg[key] = _value(val)
    wl = build_workload(cfg, seed=args.seed, vocab_size=args.vocab_size, max_model_len=max_model_len)
    return wl.requests


async def discover(client: httpx.AsyncClient) -> tuple[str, int | None]:
    r = await client.get("/v1/models")
    r.raise_for_status()
    first = r.json()["data"][0]
    return first["id"], first.get("max_model_len")


async def send(
    client: httpx.AsyncClient, req: TraceRequest, args: argparse.Namespace, model: str
) -> RequestResult:
    """One streamed completion; timings are measured at the client."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": req.prompt_token_ids or req.prompt,
        "max_tokens": req.output_len,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if not args.no_ignore_eos:
        body["ignore_eos"] = True
    res = RequestResult(success=False, prompt_len=req.prompt_len)
    start = time.perf_counter()
    last = None
    chunks = 0
    try:
        async with client.stream("POST", "/v1/completions", json=body, timeout=args.timeout) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if "error" in msg:
                    res.error = str(msg["error"])
                    return res
                if msg.get("usage"):
                    res.output_tokens = int(msg["usage"]["completion_tokens"])
                    res.prompt_len = int(msg["usage"]["prompt_tokens"])
                if msg.get("choices") and msg["choices"][0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last = now
                    chunks += 1
        res.e2e = time.perf_counter() - start
        res.output_tokens = res.output_tokens or chunks
        res.success = last is not None
        if not res.success:
            res.error = "no text was streamed"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{e.__class__.__name__}: {e}"
    return res


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=args.base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        model, server_len = await discover(client)
        model = args.model or model
        requests = load_requests(args, args.max_model_len or server_len or 2048)
        rng = np.random.default_rng(args.seed)
        gaps = (
            rng.exponential(1.0 / args.request_rate, len(requests))
            if math.isfinite(args.request_rate)
            else np.zeros(len(requests))
        )
        sem = asyncio.Semaphore(args.max_concurrency or len(requests))
        bar = tqdm(total=len(requests), desc="bench serve", unit="req")

        async def limited(req: TraceRequest) -> RequestResult:
            async with sem:
                out = await send(client, req, args, model)
            bar.update(1)
            return out

        t0 = time.perf_counter()
        tasks = []
        for req, gap in zip(requests, gaps):
            if gap > 0:
                await asyncio.sleep(float(gap))
            tasks.append(asyncio.create_task(limited(req)))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - t0
        bar.close()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(model=model, num_requests=len(requests), request_rate=str(args.request_rate))
    metrics = summarize(list(results), duration)
    errors = sorted({r.error for r in results if not r.success})
    if errors:
        metrics["errors"] = errors[:10]
    return config, metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    started = time.time()
    config, metrics = asyncio.run(run(args))
    print(format_table(metrics, f"kvlab bench serve: {config['label'] or config['model']}"))
    out = args.result_dir or Path("results/serve_bench") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    from kvlab.manifest import write_manifest

    # the machine recorded is the load generator's; the server's own is in its banner / run manifest
    write_manifest(out, config, started=started, extra={"entry_point": "kvlab.bench serve"})
    print(f"results: {out}")
    return 0 if metrics["failed"] == 0 else 1
