"""The one-screen summary ``kvlab.run`` prints: setup, throughput/latency, memory categories."""

from __future__ import annotations

from typing import Any

CATEGORIES = [
    ("token states", "mem_token_states_ratio"),
    ("reservation", "mem_reservation_ratio"),
    ("internal fragmentation", "mem_internal_frag_ratio"),
    ("external fragmentation & others", "mem_external_frag_ratio"),
]


def memory_table(metrics: dict[str, Any]) -> str:
    """The paper's Fig. 2 categories as a small text bar chart (time-averaged share of the pool)."""
    lines = [f"KV memory ({int(metrics.get('kv_capacity_tokens', 0)):,} token slots), time-averaged:"]
    for label, key in CATEGORIES:
        v = float(metrics.get(key, float("nan")))
        bar = "#" * int(round(v * 40)) if v == v else ""
        lines.append(f"  {label:<33} {v * 100:6.1f}%  {bar}")
    free = float(metrics.get("mem_free_ratio", float("nan")))
    if free == free:
        lines.append(f"    {'of which free pool':<31} {free * 100:6.1f}%")
    return "\n".join(lines)


def print_summary(cfg: Any, result: dict[str, Any]) -> None:
    m = result["metrics"]
    a = cfg.allocator
    extra = "".join(f" {k}={a[k]}" for k in ("reservation", "placement") if k in a)
    print(f"\n== kvlab: allocator={a.name} block_size={a.block_size}{extra} scheduler={cfg.scheduler.name} "
          f"executor={cfg.executor.name} model={cfg.model.name} workload={cfg.workload.name}")
    print(f"   {result['workload'].description}")
    rows = [
        ("requests finished", f"{m.get('num_finished', 0):.0f}"),
        ("request throughput", f"{m.get('request_throughput', 0):.3f} req/s"),
        ("output throughput", f"{m.get('output_throughput', 0):.1f} tok/s"),
        ("mean TTFT / TPOT", f"{m.get('mean_ttft_ms', 0):.1f} ms / {m.get('mean_tpot_ms', 0):.1f} ms"),
        ("normalized latency", f"{m.get('normalized_latency_s_per_token', 0):.4f} s/token"),
        ("mean batched requests", f"{m.get('mean_batched_requests', 0):.2f}"),
        ("preemptions", f"{m.get('num_preemptions', 0):.0f}"),
        ("prefix hit rate", f"{m.get('prefix_hit_rate', 0):.3f}"),
        ("sharing saved", f"{m.get('sharing_saved_ratio', 0):.3f}"),
    ]
    for k, v in rows:
        print(f"   {k:<22} {v}")
    print(memory_table(m))
    for prompt, text in result.get("samples", [])[:2]:
        # the end of the prompt: a chat template's start is the same system prompt for every request
        shown = prompt if len(prompt) <= 160 else "..." + prompt[-160:]
        print(f"-- sample --\n   prompt: {shown!r}\n   output: {text[:300]!r}")
