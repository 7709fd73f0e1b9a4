"""Prometheus exposition of the server (``GET /metrics``), named after vLLM's with a ``kvlab:`` prefix.

(Not to be confused with :mod:`kvlab.metrics`, the experiments' metric functions over records.)

Gauges and counters are read from the engine's latest :class:`~kvlab.engine_stats.EngineStats` at
scrape time, on the HTTP thread, without touching the engine: the snapshot is immutable, so a
scrape during a long step answers at once with the last step's figures and says how old they are
(``kvlab:stats_age_seconds``, ``kvlab:last_step_timestamp_seconds``). Latency histograms are
observed when a request finishes, from its record, through :func:`kvlab.metrics.request_latency`
(the one latency implementation). Each server owns its registry, so several servers (tests) can
live in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kvlab.engine_stats import EngineStats
from kvlab.metrics import request_latency
from kvlab.request_output import RequestOutput

P = "kvlab:"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
CATEGORIES = ("token_states", "reservation", "internal_frag", "external_frag")


class ServerMetrics:
    """All metric objects of one server, in their own :class:`CollectorRegistry`.

    ``stats`` returns the engine's latest snapshot; :meth:`render` (any thread) sets gauges and
    advances counters from it; :meth:`observe_finished` (engine thread) records latencies.
    """

    def __init__(self, stats: Callable[[], EngineStats], model_name: str = "",
                 kv_format: dict[str, str] | None = None) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        r = self.registry = CollectorRegistry()
        # info-style gauge (always 1): the KV cache's format and its exact bytes per token slot
        fmt = {"scheme": "none", "bytes_per_token": ""} | (kv_format or {})
        self.kv_format = Gauge(P + "kv_cache_format_info", "KV cache format (kv_quant) and bytes per token slot",
                               ["scheme", "bytes_per_token"], registry=r)
        self.kv_format.labels(fmt["scheme"], fmt["bytes_per_token"]).set(1)
        self.kv_usage = Gauge(P + "kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full)", registry=r)
        self.kv_blocks = Gauge(P + "kv_cache_blocks", "KV blocks by state", ["state"], registry=r)
        self.kv_memory = Gauge(P + "kv_cache_memory_slots", "KV token slots by the vLLM paper's memory categories",
                               ["category"], registry=r)
        self.prefix_hit_rate = Gauge(P + "prefix_cache_hit_rate",
                                     "Prompt tokens served by the prefix cache / prompt tokens looked up", registry=r)
        self.prefix_queries = Counter(P + "prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      registry=r)
        self.prefix_hits = Counter(P + "prefix_cache_hits", "Prompt tokens served by the prefix cache", registry=r)
        self.running = Gauge(P + "num_requests_running", "Requests in the running batch", registry=r)
        self.waiting = Gauge(P + "num_requests_waiting", "Requests waiting to be scheduled", registry=r)
        self.swapped = Gauge(P + "num_requests_swapped", "Requests swapped out to CPU", registry=r)
        self.preemptions = Counter(P + "num_preemptions", "Preemptions (recompute or swap)", registry=r)
        self.steps = Counter(P + "engine_steps", "Engine steps completed", registry=r)
        self.last_step = Gauge(P + "last_step_timestamp_seconds",
                               "Wall time the last engine step completed (0 before the first)", registry=r)
        self.stats_age = Gauge(P + "stats_age_seconds", "Age of the engine snapshot these gauges come from",
                               registry=r)
        self.ttft = Histogram(P + "time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS,
                              registry=r)
        self.tpot = Histogram(P + "time_per_output_token_seconds", "Mean time per output token after the first",
                              buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram(P + "e2e_request_latency_seconds", "End-to-end request latency",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter(P + "prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter(P + "generation_tokens", "Generated tokens of finished requests", registry=r)
        self.finished = Counter(P + "request_success", "Finished requests", ["finished_reason"], registry=r)
        self.aborted = Counter(P + "request_aborted", "Requests aborted (client gone, shutdown or rejected)",
                               registry=r)
        self.rejected = Counter(P + "request_rejected", "Requests answered with a 4xx before reaching the engine",
                                ["status"], registry=r)
        self._last = EngineStats()

    def update(self, s: EngineStats) -> None:
        """Set gauges and advance counters from a snapshot (idempotent for the same snapshot)."""
        with self._lock:
            kv = s.kv
            self.kv_usage.set(kv.used_fraction)
            self.kv_blocks.labels("total").set(kv.total_blocks)
            self.kv_blocks.labels("free").set(kv.free_blocks)
            for cat in CATEGORIES:
                self.kv_memory.labels(cat).set(getattr(kv, cat))
            self.running.set(s.running)
            self.waiting.set(s.waiting)
            self.swapped.set(s.swapped)
            last = self._last
            for counter, now, before in ((self.preemptions, s.num_preemptions, last.num_preemptions),
                                         (self.prefix_queries, s.prefix_query_tokens, last.prefix_query_tokens),
                                         (self.prefix_hits, s.prefix_hit_tokens, last.prefix_hit_tokens),
                                         (self.steps, s.step, last.step)):
                if now > before:
                    counter.inc(now - before)
            if s.step >= last.step:
                self._last = s
            q, h = s.prefix_query_tokens, s.prefix_hit_tokens
            self.prefix_hit_rate.set(h / q if q else 0.0)
            self.last_step.set(s.last_step_at or 0.0)
            self.stats_age.set(max(time.time() - s.published_at, 0.0))

    def observe_finished(self, out: RequestOutput) -> None:
        """Latencies and token counts of a finished request (engine thread)."""
        self.prompt_tokens.inc(len(out.prompt_token_ids))
        self.generation_tokens.inc(sum(len(o.token_ids) for o in out.outputs))
        reason = out.outputs[0].finish_reason if out.outputs else None
        self.finished.labels(reason or "unknown").inc()
        rec = out.metrics
        if rec is None or rec.finish_time is None:
            return
        lat = request_latency(rec)
        self.e2e.observe(max(lat.e2el_s, 0.0))
        if lat.ttft_s is not None:
            self.ttft.observe(max(lat.ttft_s, 0.0))
        if lat.tpot_s is not None:
            self.tpot.observe(max(lat.tpot_s, 0.0))

    def render(self) -> bytes:
        self.update(self.stats())
        return generate_latest(self.registry)
