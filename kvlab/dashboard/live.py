"""The server's block-map publisher: a stats listener of the engine that snapshots the pool only
while a dashboard watches, at most ``max_hz`` times a second.

It runs on the engine thread (as every :attr:`LLMEngine.stats_listeners` entry does): when
nobody subscribes it returns after one comparison, so a server without an open dashboard pays
nothing measurable. While subscribed, a snapshot (block map + JSON encoding: milliseconds for
10,000 blocks, see docs/dashboard.md) is built when ``1 / max_hz`` seconds have passed since the
last one *and* the engine thread has spent at most :data:`BUDGET` of its time on snapshots (the
spacing grows with the last snapshot's cost: a 20 ms snapshot waits at least 1 s), so the
engine's loss stays under ~2% whatever the pool size or the machine's load; and always when the
engine has just gone idle (so the page shows the final state of a burst, e.g. blocks left cached).
The result is one immutable ``(version, json text)`` pair swapped in by one assignment; HTTP
handlers on other threads read it without locks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from kvlab.dashboard.snapshot import encode
from kvlab.engine_stats import EngineStats

BUDGET = 0.02  # at most this fraction of the engine thread's wall time goes to snapshots while busy


class LiveBlockMap:
    """Throttled, subscriber-gated snapshots of one engine's pool.

    Mutated by :meth:`__call__` / :meth:`build` (engine thread) and :meth:`subscribe` /
    :meth:`unsubscribe` (any thread). :attr:`latest` is ``(version, json)`` or None before the
    first snapshot; ``version`` grows by one per snapshot.

    Args:
        allocator: the allocator's name, carried in every snapshot.
        max_hz: at most this many snapshots per second while the engine steps.
    """

    def __init__(self, allocator: str = "", max_hz: float = 4.0) -> None:
        if not max_hz > 0:
            raise ValueError(f"server.dashboard_hz={max_hz!r}: must be a positive number")
        self.allocator = allocator
        self.min_interval_s = 1.0 / max_hz
        self.latest: tuple[int, str] | None = None
        self.build_times_s: deque[float] = deque(maxlen=200)  # cost of recent snapshots (engine thread)
        self._subscribers = 0
        self._lock = threading.Lock()
        self._last_build = float("-inf")
        self._last_cost = 0.0
        self._last_key: tuple[int, int, int, int] | None = None

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def subscribe(self) -> None:
        with self._lock:
            self._subscribers += 1

    def unsubscribe(self) -> None:
        with self._lock:
            self._subscribers = max(self._subscribers - 1, 0)

    def __call__(self, engine: Any, stats: EngineStats) -> None:
        """Stats listener: snapshot now if someone watches and it is due."""
        if self._subscribers <= 0:
            return
        key = (stats.step, stats.unfinished, stats.num_finished, stats.running)
        due = time.monotonic() - self._last_build >= max(self.min_interval_s, self._last_cost / BUDGET)
        went_idle = stats.unfinished == 0 and key != self._last_key
        if due or went_idle:
            self.build(engine, stats)

    def build(self, engine: Any, stats: EngineStats | None = None) -> tuple[int, str]:
        """Snapshot now (engine thread only) and publish it; returns ``(version, json)``."""
        t0 = time.perf_counter()
        stats = stats if stats is not None else engine.stats
        text = json.dumps(encode(engine.block_map(), stats, self.allocator), separators=(",", ":"))
        version = (self.latest[0] if self.latest else 0) + 1
        self.latest = (version, text)
        self._last_build = time.monotonic()
        self._last_key = (stats.step, stats.unfinished, stats.num_finished, stats.running)
        self._last_cost = time.perf_counter() - t0
        self.build_times_s.append(self._last_cost)
        return self.latest
