"""Prometheus metrics of the server (``GET /metrics``), named after vLLM's with a ``kvlab:`` prefix.

Gauges (pool and queues) are set by the engine thread after every loop iteration from the
engine's own state; latency histograms and token counters are observed when a request finishes,
from its :class:`~kvlab.records.RequestRecord` (engine clock, seconds). Each server owns its
registry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kvlab.request_output import RequestOutput

P = "kvlab:"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
CATEGORIES = ("token_states", "reservation", "internal_frag", "external_frag")


class ServerMetrics:
    """All metric objects of one server, in their own :class:`CollectorRegistry`."""

    def __init__(self, engine: Any, model_name: str = "") -> None:
        self.engine = engine
        r = self.registry = CollectorRegistry()
        self.kv_usage = Gauge(
            P + "kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full)", registry=r
        )
        self.kv_blocks = Gauge(P + "kv_cache_blocks", "KV blocks by state", ["state"], registry=r)
        self.kv_memory = Gauge(
            P + "kv_cache_memory_slots",
            "KV token slots by the vLLM paper's memory categories",
            ["category"],
            registry=r,
        )
        self.prefix_hit_rate = Gauge(
            P + "prefix_cache_hit_rate",
            "Prompt tokens served by the prefix cache / prompt tokens looked up",
            registry=r,
        )
        self.prefix_queries = Counter(
            P + "prefix_cache_queries", "Prompt tokens looked up in the prefix cache", registry=r
        )
        self.prefix_hits = Counter(
            P + "prefix_cache_hits", "Prompt tokens served by the prefix cache", registry=r
        )
        self.running = Gauge(P + "num_requests_running", "Requests in the running batch", registry=r)
        self.waiting = Gauge(P + "num_requests_waiting", "Requests waiting to be scheduled", registry=r)
        self.swapped = Gauge(P + "num_requests_swapped", "Requests swapped out to CPU", registry=r)
        self.preemptions = Counter(P + "num_preemptions", "Preemptions (recompute or swap)", registry=r)
        self.ttft = Histogram(
            P + "time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.tpot = Histogram(
            P + "time_per_output_token_seconds",
            "Mean time per output token after the first",
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            P + "e2e_request_latency_seconds",
            "End-to-end request latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(P + "prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter(
            P + "generation_tokens", "Generated tokens of finished requests", registry=r
        )
        self.finished = Counter(P + "request_success", "Finished requests", ["finished_reason"], registry=r)
        self.aborted = Counter(
            P + "request_aborted", "Requests aborted (client gone or rejected)", registry=r
        )
        self._last_preemptions = 0
        self._last_prefix = (0, 0)

    def update(self, snap: dict[str, Any]) -> None:
        """Set gauges from a fresh snapshot (engine thread)."""
        total, free = snap["num_blocks"], snap["free_blocks"]
        self.kv_usage.set((total - free) / total if total else 0.0)
        self.kv_blocks.labels("total").set(total)
        self.kv_blocks.labels("free").set(free)
        report = self.engine.allocator.memory_report()
        for cat in CATEGORIES:
            self.kv_memory.labels(cat).set(getattr(report, cat))
        self.running.set(snap["running"])
        self.waiting.set(snap["waiting"])
        self.swapped.set(snap["swapped"])
        if snap["num_preemptions"] > self._last_preemptions:
            self.preemptions.inc(snap["num_preemptions"] - self._last_preemptions)
        self._last_preemptions = snap["num_preemptions"]
        stats = self.engine.allocator.stats()
        q, h = int(stats.get("prefix_query_tokens", 0)), int(stats.get("prefix_hit_tokens", 0))
        lq, lh = self._last_prefix
        if q > lq:
            self.prefix_queries.inc(q - lq)
        if h > lh:
            self.prefix_hits.inc(h - lh)
        self._last_prefix = (q, h)
        self.prefix_hit_rate.set(h / q if q else 0.0)

    def observe_finished(self, out: RequestOutput) -> None:
        """Latencies and token counts of a finished request (engine thread)."""
        rec = out.metrics
        self.prompt_tokens.inc(len(out.prompt_token_ids))
        self.generation_tokens.inc(sum(len(o.token_ids) for o in out.outputs))
        reason = out.outputs[0].finish_reason if out.outputs else None
        self.finished.labels(reason or "unknown").inc()
        if rec is None or rec.finish_time is None:
            return
        self.e2e.observe(max(rec.finish_time - rec.arrival_time, 0.0))
        if rec.first_token_time is not None:
            self.ttft.observe(max(rec.first_token_time - rec.arrival_time, 0.0))
            if rec.output_len > 1:
                self.tpot.observe(max(rec.finish_time - rec.first_token_time, 0.0) / (rec.output_len - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
