"""Replay a :class:`~kvlab.replay.trace.BlockTrace` through a prefix cache of ``capacity`` blocks.

Policies: the cache keeps at most ``capacity`` blocks. An access hits its longest cached prefix;
its other blocks are inserted (held by the access, so not evictable while it runs), evicting the
policy's victim whenever the cache is full (with the victim go its cached descendants, which no
prompt can reach any more: exactly what the allocator's index does); if nothing is evictable the
rest of the access is not cached. Then the access releases its blocks, last first. The policies
are the registered :mod:`~kvlab.allocator.eviction` classes themselves, fed the same events the
allocator feeds them.

Belady: the offline optimum (MIN) over the flattened access stream with bypass — on a miss with a
full cache, drop whichever of the cached blocks and the incoming one is next used farthest in the
future. It counts every access that finds its block, so it bounds from above any policy here
(they are demand-paging algorithms on the same stream, and a prefix hit is an item hit).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from kvlab.allocator.eviction import EVICTION, EvictionPolicy
from kvlab.replay.trace import BlockTrace

NEVER = float("inf")


@dataclass(frozen=True)
class SimResult:
    policy: str
    capacity: int
    hits: int
    accesses: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.accesses if self.accesses else 0.0


def simulate_policy(trace: BlockTrace, capacity: int, policy: EvictionPolicy | str) -> SimResult:
    """Hits of ``policy`` (an instance or a registered name) on ``trace`` with ``capacity`` blocks."""
    if isinstance(policy, str):
        policy = EVICTION.build(policy)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 block, got {capacity}")
    children: dict[int, set[int]] = {}
    cached: set[int] = set()
    hits = 0
    parent = trace.parent
    for chain in trace.accesses:
        h = 0
        n = len(chain)
        while h < n and chain[h] in cached:
            h += 1
        hits += h
        for k in chain[:h]:
            policy.locked(k)
        held = chain[:h]
        for j in range(h, n):
            k = chain[j]
            if len(cached) >= capacity:
                if not len(policy):
                    break  # every cached block is held by this access: the rest is not cached
                _drop(policy.victim(), policy, cached, children, parent, dropped=False)
                if j and chain[j - 1] not in cached:
                    break  # the victim took this access's own chain with it (fifo)
            cached.add(k)
            if parent[k] >= 0:
                children.setdefault(parent[k], set()).add(k)
            policy.inserted(k, trace.depth[k])
            held.append(k)
        policy.unlocked_many([k for k in reversed(held) if k in cached])
    return SimResult(policy.name, capacity, hits, trace.num_accesses)


def _drop(v: int, policy: EvictionPolicy, cached: set[int], children: dict[int, set[int]],
          parent: list[int], dropped: bool) -> None:
    """Remove ``v`` and its cached descendants (``dropped``: ``v`` was not the policy's victim)."""
    stack = [v]
    first = True
    while stack:
        x = stack.pop()
        if x not in cached:
            continue
        if not first or dropped:
            policy.dropped(x)
        first = False
        cached.discard(x)
        stack.extend(children.pop(x, ()))
    p = parent[v]
    if p >= 0 and p in children:
        children[p].discard(v)


def belady(trace: BlockTrace, capacity: int) -> SimResult:
    """Hits of the offline optimum (MIN with bypass) with ``capacity`` blocks."""
    stream = [k for chain in trace.accesses for k in chain]
    nxt: list[float] = [NEVER] * len(stream)
    last: dict[int, int] = {}
    for i in range(len(stream) - 1, -1, -1):
        k = stream[i]
        nxt[i] = last.get(k, NEVER)
        last[k] = i
    cached: dict[int, float] = {}  # block -> its next use
    heap: list[tuple[float, int]] = []  # (-next use, block), stale entries skipped
    hits = 0
    for i, k in enumerate(stream):
        nu = nxt[i]
        if k in cached:
            hits += 1
        elif len(cached) >= capacity:
            while True:
                neg, v = heap[0]
                if cached.get(v) == -neg:
                    break
                heapq.heappop(heap)
            if nu >= -neg:
                continue  # the incoming block is needed last: do not cache it
            heapq.heappop(heap)
            del cached[v]
        cached[k] = nu
        heapq.heappush(heap, (-nu, k))
    return SimResult("belady", capacity, hits, len(stream))
