"""The block-map snapshot format: one JSON object per instant, the same live and recorded.

Built on the engine thread from :meth:`LLMEngine.block_map` (the allocator's read-only view,
:mod:`kvlab.allocator.block_map`) and the engine's published :class:`EngineStats`. Per-block
arrays travel as base64 of little-endian typed arrays (6 bytes per block: 60 kB for 10,000
blocks), everything else as plain JSON::

    {"v": 1, "step": 812, "clock_s": 41.3, "wall": 1764370000.1, "allocator": "prefix",
     "num_blocks": 4096, "block_size": 16,
     "state": b64(uint8[N]),   # 0 free, 1 in use, 2 shared, 3 cached (free), 4 reserved, 5 slack
     "owner": b64(uint16[N]),  # 0 none, else 1 + index into "requests"
     "ref":   b64(uint8[N]),   # reference count (clamped to 255)
     "fill":  b64(uint16[N]),  # token slots written, 0..block_size
     "requests": ["req-3", "cmpl-9f..."],
     "shared": {"17": [0, 1]}, # block -> request indices, blocks held by more than one request
     "stats": {"token_states": ..., "reservation": ..., "internal_frag": ..., "external_frag": ...,
               "total_slots": ..., "free_blocks": ..., "total_blocks": ..., "running": ...,
               "waiting": ..., "swapped": ..., "running_seqs": ..., "batch_tokens": ...,
               "num_preemptions": ..., "prefix_query_tokens": ..., "prefix_hit_tokens": ...,
               "num_finished": ..., "blocks_in_use": ...}}
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from kvlab.allocator.block_map import BlockMap
from kvlab.engine_stats import EngineStats

VERSION = 1
ARRAYS = {"state": np.uint8, "owner": np.uint16, "ref": np.uint8, "fill": np.uint16}
STAT_KEYS = ("running", "waiting", "swapped", "running_seqs", "batch_tokens", "num_preemptions",
             "prefix_query_tokens", "prefix_hit_tokens", "num_finished", "unfinished")
KV_KEYS = ("token_states", "reservation", "internal_frag", "external_frag", "total_slots", "free_blocks",
           "total_blocks")


def encode(bm: BlockMap, stats: EngineStats, allocator: str = "") -> dict[str, Any]:
    """The JSON-ready snapshot of ``bm`` taken right after ``stats`` was published."""
    out: dict[str, Any] = {"v": VERSION, "step": stats.step, "clock_s": round(stats.clock_s, 6),
                           "wall": stats.published_at, "allocator": allocator,
                           "num_blocks": bm.num_blocks, "block_size": bm.block_size}
    for key, dtype in ARRAYS.items():
        arr = np.ascontiguousarray(getattr(bm, key), dtype=np.dtype(dtype).newbyteorder("<"))
        out[key] = base64.b64encode(arr.tobytes()).decode("ascii")
    out["requests"] = list(bm.requests)
    out["shared"] = {str(b): list(ix) for b, ix in bm.shared_owners.items()}
    st = {k: getattr(stats, k) for k in STAT_KEYS}
    st.update({k: getattr(stats.kv, k) for k in KV_KEYS})
    st["blocks_in_use"] = stats.kv.total_blocks - stats.kv.free_blocks
    out["stats"] = st
    return out


def decode_arrays(snap: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-block arrays of a snapshot as numpy arrays (state, owner, ref, fill)."""
    return {key: np.frombuffer(base64.b64decode(snap[key]), dtype=np.dtype(dtype).newbyteorder("<"))
            for key, dtype in ARRAYS.items()}
