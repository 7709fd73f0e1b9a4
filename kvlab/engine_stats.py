"""``EngineStats``: the immutable snapshot the engine publishes once per step.

Readers outside the engine (the server's ``/health`` and ``/metrics``, a dashboard) read only this
object, never scheduler queues, allocator counts or the engine clock. The engine builds a new
instance after every step (and after requests are added or aborted between steps) and swaps it
in with one attribute assignment, so a reader on another thread always sees one consistent,
complete snapshot — possibly a step old, which ``published_at`` / ``last_step_at`` (wall clock,
``time.time()``) let it judge.

Latency aggregates come from :func:`kvlab.metrics.request_latency`, the one place the TTFT / TPOT /
E2E formulas live; they summarise the last ``window`` finished requests (seconds). The snapshot
holds those requests' latencies as an immutable tuple shared between snapshots until a request
finishes, and computes the summaries only when a reader asks: publishing stays a few
microseconds per step (the simulator runs tens of thousands of steps).

:class:`Bookkeeping` is the engine's side of it: the cumulative counters and the latency window
that each snapshot reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from kvlab.metrics import request_latency
from kvlab.records import RequestRecord

NAN = float("nan")


@dataclass(frozen=True)
class LatencySummary:
    """Count, mean, median and p99 of one latency over a window of finished requests (seconds);
    NaN when the window holds no sample."""

    count: int = 0
    mean_s: float = NAN
    p50_s: float = NAN
    p99_s: float = NAN

    @classmethod
    def of(cls, values_s: Sequence[float]) -> LatencySummary:
        if not values_s:
            return cls()
        v = np.asarray(values_s, dtype=float)
        return cls(len(v), float(v.mean()), float(np.median(v)), float(np.percentile(v, 99)))


class Latency(NamedTuple):
    """One finished request's latencies in seconds (None where undefined); see ``request_latency``."""

    ttft_s: float | None
    tpot_s: float | None
    e2el_s: float


class KVUsage(NamedTuple):
    """The pool in the vLLM paper's four categories (token slots) plus block counts."""

    token_states: int = 0
    reservation: int = 0
    internal_frag: int = 0
    external_frag: int = 0
    free_slots: int = 0
    total_slots: int = 0
    free_blocks: int = 0
    total_blocks: int = 0
    block_size: int = 0

    @property
    def used_fraction(self) -> float:
        """Blocks in use / all blocks (0 for an empty pool)."""
        return (self.total_blocks - self.free_blocks) / self.total_blocks if self.total_blocks else 0.0


class EngineStats(NamedTuple):
    """State of the engine at one instant. Counters are cumulative since the engine started.

    Immutable (a ``NamedTuple``: building one costs about a microsecond, where a frozen
    dataclass of this many fields cost ~25 µs on the dev VM — once per step, that was a tenth of
    a simulator step).

    Attributes:
        step: steps completed so far.
        clock_s: the engine clock (virtual for the simulator) at publication.
        published_at: wall time (``time.time()``) this snapshot was built.
        last_step_at: wall time the last step completed (None before the first step).
        busy_since: wall time the engine last went from idle to holding work (None while idle).
        last_step_duration_s: duration of the last step on the engine clock.
        running / waiting / swapped: requests (sequence groups) in each queue.
        running_seqs: sequences in the running batch.
        batch_tokens: tokens the last step computed (prefill + decode).
        unfinished: requests the engine still holds (queued, running or swapped).
        kv: pool usage (:class:`KVUsage`).
        prefix_query_tokens / prefix_hit_tokens: prompt tokens looked up in / served by the prefix cache.
        num_preemptions, swapped_out_blocks, swapped_in_blocks: cumulative counts.
        num_finished: requests finished (any reason, aborts included); num_aborted: of which aborted.
        recent_latencies: latencies of the last finished requests (at most the engine's window).
        ttft / tpot / e2el: summaries of ``recent_latencies`` (computed when read).
    """

    step: int = 0
    clock_s: float = 0.0
    published_at: float = 0.0
    last_step_at: float | None = None
    busy_since: float | None = None
    last_step_duration_s: float = 0.0
    running: int = 0
    waiting: int = 0
    swapped: int = 0
    running_seqs: int = 0
    batch_tokens: int = 0
    unfinished: int = 0
    kv: KVUsage = KVUsage()
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    num_preemptions: int = 0
    swapped_out_blocks: int = 0
    swapped_in_blocks: int = 0
    num_finished: int = 0
    num_aborted: int = 0
    recent_latencies: tuple[Latency, ...] = ()

    @property
    def ttft(self) -> LatencySummary:
        return LatencySummary.of([x.ttft_s for x in self.recent_latencies if x.ttft_s is not None])

    @property
    def tpot(self) -> LatencySummary:
        return LatencySummary.of([x.tpot_s for x in self.recent_latencies if x.tpot_s is not None])

    @property
    def e2el(self) -> LatencySummary:
        return LatencySummary.of([x.e2el_s for x in self.recent_latencies])

    @property
    def has_work(self) -> bool:
        return self.unfinished > 0

    def seconds_without_progress(self, now: float) -> float:
        """Seconds, at wall time ``now``, that work has waited without a step completing (0 when
        idle): the quantity a health check compares with its stall limit."""
        if not self.has_work:
            return 0.0
        since = max(self.last_step_at or 0.0, self.busy_since or 0.0)
        return max(now - since, 0.0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict with the summaries instead of the raw latencies (NaN stays NaN)."""
        d = self._asdict()
        del d["recent_latencies"]
        d["kv"] = self.kv._asdict()
        return {**d, **{k: asdict(getattr(self, k)) for k in ("ttft", "tpot", "e2el")}}


class Bookkeeping:
    """Cumulative counters and a window of recent latencies: what the engine keeps in place of
    unbounded per-request history when it runs as a server (mutated on the engine thread only;
    snapshots read :meth:`latencies`)."""

    def __init__(self, window: int) -> None:
        self.num_finished = 0
        self.num_aborted = 0
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self._lat: deque[Latency] = deque(maxlen=window)
        self._frozen: tuple[Latency, ...] = ()
        self._stale = False

    def finished(self, rec: RequestRecord) -> None:
        self.num_finished += 1
        self.num_aborted += rec.finish_reason == "abort"
        self._lat.append(Latency(*request_latency(rec)))
        self._stale = True

    def latencies(self) -> tuple[Latency, ...]:
        if self._stale:  # a new tuple only after a request finished; snapshots share it otherwise
            self._frozen, self._stale = tuple(self._lat), False
        return self._frozen
