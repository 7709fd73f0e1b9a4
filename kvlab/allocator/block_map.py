"""The block map: a read-only, per-block picture of the pool for the dashboard and replays.

:func:`block_map` is the one documented read-only view the dashboard's snapshot builder uses. It
never mutates the allocator and reads only these attributes, which every block-table allocator
(paged, prefix, contiguous) keeps:

- ``num_blocks``, ``block_size``, ``pool.ref`` (reference count per block);
- ``tables()`` (seq id -> block ids, logical order) and ``sequences()`` (seq id ->
  :class:`Sequence`), the read-only view of :class:`~kvlab.allocator.table_queries.BlockTableQueries`;
- prefix caching (an allocator with an ``index``): ``cached_block_ids()`` -- a block in the index
  with ``ref == 0`` is *cached-but-free*;
- contiguous: ``_runs`` (seq id -> (first block, granted blocks, usable slots A)) and ``_held``
  (request id -> runs reserved for the request's later forks).

Cost: O(num_blocks + total table length): numpy over the concatenated tables plus one Python
pass over the sequences (docs/dashboard.md has measurements). Callers (the engine's block-map publishers) run
it only when somebody watches or records, never on every step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Block states (uint8 codes, shared with the dashboard's JavaScript and the GIF exporter).
FREE, PRIVATE, SHARED, CACHED, RESERVED, SLACK = range(6)
STATE_NAMES = ("free", "in use", "shared", "cached (free)", "reserved (unwritten)", "slack (never written)")


@dataclass(frozen=True)
class BlockMap:
    """One instant of the pool, one entry per block (arrays of length ``num_blocks``).

    Attributes:
        state: uint8 code per block (:data:`FREE` .. :data:`SLACK`).
        owner: uint16 per block: 0 = nobody, else 1 + index into ``requests`` (for a block held by
            several requests: the first holder found; all of them are in ``shared_owners``).
        ref: uint8 reference count (number of block tables holding the block, clamped to 255).
        fill: uint16 token slots written (0..block_size).
        requests: request ids, in order of first appearance in the tables.
        shared_owners: block id -> indices into ``requests`` of every request holding it, only
            for blocks held by more than one request.
    """

    num_blocks: int
    block_size: int
    state: np.ndarray
    owner: np.ndarray
    ref: np.ndarray
    fill: np.ndarray
    requests: tuple[str, ...] = ()
    shared_owners: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Blocks per state name plus ``in_use`` (ref > 0) and ``requests`` (distinct owners)."""
        c = np.bincount(self.state, minlength=len(STATE_NAMES))
        out = {name: int(n) for name, n in zip(STATE_NAMES, c)}
        out["in_use"] = int(np.count_nonzero(self.ref))
        out["requests"] = len(self.requests)
        return out


def block_map(alloc: Any) -> BlockMap:
    """Build the :class:`BlockMap` of a block-table allocator. Does not mutate it.

    Vectorized over the concatenation of all block tables: the only Python loop is one pass over
    the sequences (plus one over the table entries of blocks held more than once)."""
    n, bs = int(alloc.num_blocks), int(alloc.block_size)
    ref = np.fromiter(alloc.pool.ref, dtype=np.int64, count=n)
    owner = np.zeros(n, dtype=np.uint16)
    fill = np.zeros(n, dtype=np.int64)
    state = np.where(ref > 1, SHARED, np.where(ref > 0, PRIVATE, FREE)).astype(np.uint8)
    tables = alloc.tables()
    seqs = alloc.sequences()
    runs = getattr(alloc, "_runs", None)
    requests: dict[str, int] = {}
    sids = [sid for sid, t in tables.items() if t]
    idx, written, usable = [], [], []
    for sid in sids:
        seq = seqs[sid]
        idx.append(requests.setdefault(seq.request.request_id, len(requests)))
        cap = len(tables[sid]) * bs
        slots = runs[sid][2] if runs is not None and sid in runs else cap  # contiguous: usable A
        written.append(min(seq.num_tokens, slots))
        usable.append(-(-slots // bs))
    lens = np.fromiter((len(tables[sid]) for sid in sids), dtype=np.int64, count=len(sids))
    flat = np.fromiter(itertools.chain.from_iterable(tables[sid] for sid in sids), dtype=np.int64,
                       count=int(lens.sum()))
    holders: dict[int, set[int]] = {}  # blocks held more than once -> request indices
    if len(flat):
        pos = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)  # index within its table
        who = np.repeat(np.asarray(idx, dtype=np.int64), lens)
        f = np.clip(np.repeat(np.asarray(written, dtype=np.int64), lens) - pos * bs, 0, bs)
        fill[flat] = f
        owner[flat] = who + 1
        multi = ref[flat] > 1
        if multi.any():
            np.maximum.at(fill, flat[multi], f[multi])  # a shared block is as full as its fullest holder
            for b, i in zip(flat[multi].tolist(), who[multi].tolist()):
                holders.setdefault(b, set()).add(i)
        if runs is not None:  # contiguous: a run's blocks past its usable slots A can never be written
            state[flat[pos >= np.repeat(np.asarray(usable, dtype=np.int64), lens)]] = SLACK
    for rid, held in (getattr(alloc, "_held", None) or {}).items():  # contiguous runs kept for forks
        i = requests.setdefault(rid, len(requests))
        for start, granted, slots in held:
            used = -(-slots // bs)
            owner[start:start + granted] = i + 1
            state[start:start + used] = RESERVED
            state[start + used:start + granted] = SLACK
    state[(state == PRIVATE) & (fill == 0)] = RESERVED  # held, nothing written yet
    cached = _cached_blocks(alloc)
    if cached is not None and len(cached):
        free_cached = cached[ref[cached] == 0]
        state[free_cached] = CACHED
        fill[free_cached] = bs  # only full blocks are cached
    shared = {b: tuple(sorted(s)) for b, s in holders.items() if len(s) > 1}
    return BlockMap(n, bs, state, owner, np.minimum(ref, 255).astype(np.uint8), fill.astype(np.uint16),
                    tuple(requests), shared)


def _cached_blocks(alloc: Any) -> np.ndarray | None:
    """Block ids in the prefix index (referenced or not), or None for allocators without one."""
    if getattr(alloc, "index", None) is None:
        return None
    return np.asarray(alloc.cached_block_ids(), dtype=np.int64)
