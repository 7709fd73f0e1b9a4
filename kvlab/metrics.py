"""Metrics: pure functions over the records the engine emits (``kvlab.records``).

One implementation serves the simulator, the real executor and the server. Definitions follow
``vllm bench serve`` for latency/throughput and the vLLM paper for normalized latency, batch size,
memory categories (Fig. 2) and sharing savings (Fig. 15); docs/metrics.md lists every key with its
unit. Nothing here mutates its inputs; undefined values (e.g. no finished request) are NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kvlab.records import RequestRecord, StepRecord

NAN = float("nan")
LATENCIES = ("ttft", "tpot", "itl", "e2el")
MEMORY_CATEGORIES = ("token_states", "reservation", "internal_frag", "external_frag")

METRIC_KEYS: tuple[str, ...] = (
    "duration_s", "num_requests", "num_finished",
    "request_throughput", "output_throughput", "total_token_throughput",
    *(f"{stat}_{m}_ms" for m in LATENCIES for stat in ("mean", "median", "p90", "p99")),
    "normalized_latency_s_per_token", "mean_batched_requests", "kv_capacity_tokens",
    *(f"mem_{c}_ratio" for c in MEMORY_CATEGORIES), "mem_free_ratio",
    "num_preemptions", "swapped_bytes", "prefix_hit_rate", "sharing_saved_ratio",
    "cost_per_million_output_tokens",
)


def _stats(name: str, values_ms: Sequence[float]) -> dict[str, float]:
    if len(values_ms) == 0:
        return {f"{s}_{name}_ms": NAN for s in ("mean", "median", "p90", "p99")}
    v = np.asarray(values_ms, dtype=float)
    return {
        f"mean_{name}_ms": float(v.mean()),
        f"median_{name}_ms": float(np.median(v)),
        f"p90_{name}_ms": float(np.percentile(v, 90)),
        f"p99_{name}_ms": float(np.percentile(v, 99)),
    }


def time_average(values: Iterable[float], weights: Iterable[float]) -> float:
    """Mean of ``values`` weighted by ``weights`` (step durations); the plain mean if every
    weight is 0; NaN if there are no values."""
    v, w = np.asarray(list(values), dtype=float), np.asarray(list(weights), dtype=float)
    if len(v) == 0:
        return NAN
    return float(np.dot(v, w) / w.sum()) if w.sum() > 0 else float(v.mean())


class RequestLatency(NamedTuple):
    """One finished request's latencies in seconds; None where undefined (no token / one token)."""

    ttft_s: float | None
    tpot_s: float | None
    e2el_s: float


def request_latency(r: RequestRecord) -> RequestLatency:
    """TTFT, TPOT and E2EL of one finished request (vLLM bench definitions) — the only place these
    formulas live: experiments, ``EngineStats`` and the server's Prometheus histograms all call it.

    TTFT = first token - arrival; TPOT = (E2EL - TTFT) / (output_len - 1); E2EL = finish - arrival.
    """
    assert r.finish_time is not None, "request_latency needs a finished request"
    ttft = tpot = None
    if r.first_token_time is not None:
        ttft = r.first_token_time - r.arrival_time
        if r.output_len > 1:
            tpot = (r.finish_time - r.first_token_time) / (r.output_len - 1)
    return RequestLatency(ttft, tpot, r.finish_time - r.arrival_time)


def latency_samples(finished: Sequence[RequestRecord]) -> dict[str, list[float]]:
    """Per-request TTFT / TPOT / E2EL and pooled ITL samples, in milliseconds (vLLM bench)."""
    out: dict[str, list[float]] = {m: [] for m in LATENCIES}
    for r in finished:
        lat = request_latency(r)
        out["e2el"].append(lat.e2el_s * 1e3)
        if lat.ttft_s is not None:
            out["ttft"].append(lat.ttft_s * 1e3)
        if lat.tpot_s is not None:
            out["tpot"].append(lat.tpot_s * 1e3)
        out["itl"].extend((np.diff(np.asarray(r.token_times, dtype=float)) * 1e3).tolist())
    return out


def _window(requests: Sequence[RequestRecord], steps: Sequence[StepRecord], warmup_s: float) -> float:
    """Start of the measurement window: the trace's first event + ``warmup_s``."""
    starts = [r.arrival_time for r in requests] + [s.time - s.duration_s for s in steps]
    return (min(starts) if starts else 0.0) + warmup_s


def compute_metrics(
    requests: Sequence[RequestRecord],
    steps: Sequence[StepRecord],
    *,
    kv_capacity_tokens: float,
    price_per_hour: float,
    num_gpus: int,
    kv_bytes_per_token: float | None = None,
    block_size: int | None = None,
    block_bytes: float | None = None,
    warmup_s: float = 0.0,
) -> dict[str, float]:
    """All metrics of one run, keyed by :data:`METRIC_KEYS` (see docs/metrics.md).

    Requests arriving before ``first event + warmup_s`` and steps ending before it are dropped
    (the paper dropped the first 60 s). ``price_per_hour`` is per GPU (USD/h); ``block_bytes``
    (or ``kv_bytes_per_token * block_size``) converts swapped blocks to bytes. Pure.
    """
    start = _window(requests, steps, warmup_s)
    counted = [r for r in requests if r.arrival_time >= start]
    finished = [r for r in counted if r.finish_time is not None]
    window_steps = [s for s in steps if s.time > start]
    ends = [r.finish_time for r in finished] or [s.time for s in window_steps] or [start]
    duration = max(ends) - start  # type: ignore[type-var]
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: NAN)

    out_tokens = sum(r.total_output_tokens for r in finished)
    in_tokens = sum(r.prompt_len for r in finished)
    m: dict[str, float] = {
        "duration_s": float(duration),
        "num_requests": float(len(counted)),
        "num_finished": float(len(finished)),
        "request_throughput": per_s(len(finished)) if finished else NAN,
        "output_throughput": per_s(out_tokens) if finished else NAN,
        "total_token_throughput": per_s(in_tokens + out_tokens) if finished else NAN,
    }
    for name, samples in latency_samples(finished).items():
        m.update(_stats(name, samples))
    norm = [(r.finish_time - r.arrival_time) / r.output_len for r in finished if r.output_len > 0]
    m["normalized_latency_s_per_token"] = float(np.mean(norm)) if norm else NAN
    # Step-averaged, as the paper-era scheduler logged num_running once per step (Fig. 13).
    m["mean_batched_requests"] = (float(np.mean([s.num_running for s in window_steps]))
                                  if window_steps else NAN)
    m["kv_capacity_tokens"] = float(kv_capacity_tokens)

    # Memory shares are averaged over the loaded phase: steps up to the last arrival. The drain
    # after it (the pool emptying while the last requests finish) would otherwise show up as
    # "external & others"; with every request at t=0 there is no such phase and all steps count.
    last_arrival = max((r.arrival_time for r in counted), default=start)
    loaded = [s for s in window_steps if s.time <= last_arrival and s.total_slots > 0]
    mem_steps = loaded or [s for s in window_steps if s.total_slots > 0]
    for cat in MEMORY_CATEGORIES:
        m[f"mem_{cat}_ratio"] = time_average((getattr(s, cat) / s.total_slots for s in mem_steps),
                                             (s.duration_s for s in mem_steps))
    # the part of "external & others" that is simply unused pool: a light load on a big pool shows
    # up there, and is not waste an allocator could recover
    m["mem_free_ratio"] = time_average((s.free_slots / s.total_slots for s in mem_steps),
                                       (s.duration_s for s in mem_steps))

    m["num_preemptions"] = float(sum(r.num_preemptions for r in counted))
    swapped_blocks = sum(s.swapped_out_blocks + s.swapped_in_blocks for s in window_steps)
    if block_bytes is None and kv_bytes_per_token is not None and block_size is not None:
        block_bytes = kv_bytes_per_token * block_size
    m["swapped_bytes"] = (0.0 if swapped_blocks == 0 else
                          NAN if block_bytes is None else float(swapped_blocks * block_bytes))
    prompt_tokens = sum(r.prompt_len for r in finished)
    m["prefix_hit_rate"] = (sum(r.num_cached_tokens for r in finished) / prompt_tokens
                            if prompt_tokens else NAN)
    shared = [s for s in window_steps if s.logical_blocks > 0]
    m["sharing_saved_ratio"] = time_average((1.0 - s.physical_blocks / s.logical_blocks for s in shared),
                                            (s.duration_s for s in shared))
    gpu_hours = price_per_hour * num_gpus * duration / 3600.0
    m["cost_per_million_output_tokens"] = gpu_hours / out_tokens * 1e6 if out_tokens and duration > 0 else NAN
    return {k: m[k] for k in METRIC_KEYS}


def summarize(metrics: Mapping[str, float]) -> str:
    """A one-screen human summary of :func:`compute_metrics`' output (missing keys show as n/a)."""

    def f(key: str, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
        v = metrics.get(key, NAN)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v * scale)

    lines = [
        f"requests      {f('num_finished', '{:.0f}')}/{f('num_requests', '{:.0f}')} finished "
        f"in {f('duration_s', '{:.1f}')} s",
        f"throughput    {f('request_throughput', '{:.3f}')} req/s, {f('output_throughput', '{:.1f}')} "
        f"output tok/s, {f('total_token_throughput', '{:.1f}')} total tok/s",
        f"norm. latency {f('normalized_latency_s_per_token', '{:.4f}')} s/token   "
        f"batch {f('mean_batched_requests')} requests (mean over steps)",
        f"{'':14}{'mean':>10}{'median':>10}{'p90':>10}{'p99':>10}  (ms)",
    ]
    for name in LATENCIES:
        lines.append(f"{name.upper():14}" + "".join(f"{f(f'{s}_{name}_ms', '{:.1f}'):>10}"
                                                   for s in ("mean", "median", "p90", "p99")))
    lines += [
        f"KV memory     token states {f('mem_token_states_ratio', '{:.1f}%', 100)}, reservation "
        f"{f('mem_reservation_ratio', '{:.1f}%', 100)}, internal frag "
        f"{f('mem_internal_frag_ratio', '{:.1f}%', 100)}, external & other "
        f"{f('mem_external_frag_ratio', '{:.1f}%', 100)} of {f('kv_capacity_tokens', '{:.0f}')} slots",
        f"sharing       saved {f('sharing_saved_ratio', '{:.1f}%', 100)} of blocks; prefix hits "
        f"{f('prefix_hit_rate', '{:.1f}%', 100)} of prompt tokens",
        f"preemption    {f('num_preemptions', '{:.0f}')} preemptions, {f('swapped_bytes', '{:.3f}', 2**-30)} "
        f"GiB swapped",
        f"cost          ${f('cost_per_million_output_tokens', '{:.3f}')} per 1M output tokens",
    ]
    return "\n".join(lines)


def write_metrics_json(metrics: Mapping[str, float], path: str | Path) -> None:
    """Write ``metrics`` as standard JSON (NaN/inf become ``null``); :func:`read_metrics_json` reverses it."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    Path(path).write_text(json.dumps(clean, indent=2) + "\n")


def read_metrics_json(path: str | Path) -> dict[str, float]:
    """Read a metrics.json; ``null`` (and non-numbers) become NaN; nested records (e.g. the torch
    executor's ``precision`` choice) are skipped."""
    raw = json.loads(Path(path).read_text())
    return {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN
            for k, v in raw.items() if not isinstance(v, dict)}
