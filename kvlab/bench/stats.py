"""Serving-benchmark statistics with vLLM's definitions (``vllm bench serve``).

Per request: TTFT = time to the first streamed chunk carrying text; ITL = gaps between
consecutive such chunks; TPOT = (e2e - TTFT) / (output tokens - 1); e2e = request start to the
last byte. Throughputs divide by the benchmark's wall duration (first send to last finish).
Latencies are reported in milliseconds as mean / median / p90 / p99, like vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    """What the client measured for one request (seconds, from its send time)."""

    success: bool
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def tpot(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


def _dist(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {
            f"mean_{name}_ms": None,
            f"median_{name}_ms": None,
            **{f"p{p}_{name}_ms": None for p in PERCENTILES if p != 50},
        }
    a = np.asarray(values) * 1000.0
    out: dict[str, float | None] = {
        f"mean_{name}_ms": float(a.mean()),
        f"median_{name}_ms": float(np.median(a)),
        f"std_{name}_ms": float(a.std()),
    }
    out.update({f"p{p}_{name}_ms": float(np.percentile(a, p)) for p in PERCENTILES if p != 50})
    return out


def summarize(results: list[RequestResult], duration_s: float) -> dict[str, Any]:
    """The benchmark's metrics (flat dict, JSON-ready; missing distributions are None)."""
    ok = [r for r in results if r.success]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_len for r in ok)
    d = max(duration_s, 1e-9)
    metrics: dict[str, Any] = {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration_s,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / d,
        "output_throughput": out_tokens / d,
        "total_token_throughput": (in_tokens + out_tokens) / d,
    }
    metrics.update(_dist("ttft", [r.ttft for r in ok]))
    metrics.update(_dist("tpot", [t for r in ok if (t := r.tpot) is not None]))
    metrics.update(_dist("itl", [g for r in ok for g in r.itl]))
    metrics.update(_dist("e2el", [r.e2e for r in ok]))
    return metrics


def format_table(m: dict[str, Any], title: str) -> str:
    """A vLLM-like result block for the terminal."""

    def f(key: str, fmt: str = "{:.2f}") -> str:
        v = m.get(key)
        return "n/a" if v is None else fmt.format(v)

    rows = [
        ("Successful requests", f("completed", "{}")),
        ("Failed requests", f("failed", "{}")),
        ("Benchmark duration (s)", f("duration_s")),
        ("Total input tokens", f("total_input_tokens", "{}")),
        ("Total generated tokens", f("total_output_tokens", "{}")),
        ("Request throughput (req/s)", f("request_throughput")),
        ("Output token throughput (tok/s)", f("output_throughput")),
        ("Total token throughput (tok/s)", f("total_token_throughput")),
    ]
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency")):
        rows += [
            (f"Mean {label} (ms)", f(f"mean_{name}_ms")),
            (f"Median {label} (ms)", f(f"median_{name}_ms")),
            (f"P99 {label} (ms)", f(f"p99_{name}_ms")),
        ]
    width = max(len(r[0]) for r in rows) + 2
    bar = "=" * (width + 12)
    return "\n".join([bar, title.center(width + 12), bar, *(f"{k:<{width}}{v:>12}" for k, v in rows), bar])
