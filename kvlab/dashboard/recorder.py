"""``record.blocks=true``: block-map snapshots of a ``kvlab.run`` experiment, for replay.

:class:`BlockRecorder` is a stats listener of the engine (engine thread): every
``every_n_steps``-th step it stores one snapshot (:mod:`kvlab.dashboard.snapshot`, the same
format the live dashboard streams). The total stays under ``max_mb`` megabytes of JSON text:
when the next snapshot would pass the bound, every other stored snapshot is dropped and the
stride doubles, so a long run keeps an evenly spaced, bounded recording instead of its first
minutes. The final state of the run is always stored. :meth:`write` puts the snapshots in
``blocks.jsonl.gz`` (one JSON object per line) and a summary in ``blocks_meta.json``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from kvlab.dashboard.snapshot import encode
from kvlab.engine_stats import EngineStats

FRAMES_FILE = "blocks.jsonl.gz"
META_FILE = "blocks_meta.json"


class BlockRecorder:
    """Records every ``every_n_steps``-th step's block map, bounded to ``max_mb`` MB of JSON.

    Mutated by :meth:`__call__` and :meth:`finish` (engine thread). ``frames`` holds
    ``(step, json)`` pairs in step order; ``stride`` is the current spacing in steps.
    """

    def __init__(self, every_n_steps: int = 10, max_mb: float = 20.0, allocator: str = "") -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"record.every_n_steps={every_n_steps!r}: must be a positive integer")
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not max_mb > 0:
            raise ValueError(f"record.max_mb={max_mb!r}: must be a positive number")
        self.every_n_steps = every_n_steps
        self.stride = every_n_steps
        self.max_bytes = int(max_mb * 1e6)
        self.allocator = allocator
        self.frames: list[tuple[int, str]] = []
        self.num_bytes = 0
        self.thinned = 0  # times the stride doubled

    def __call__(self, engine: Any, stats: EngineStats) -> None:
        if stats.step % self.stride == 0 and (not self.frames or self.frames[-1][0] != stats.step):
            self._add(engine, stats)

    def finish(self, engine: Any) -> None:
        """Store the final state (once)."""
        if not self.frames or self.frames[-1][0] != engine.stats.step:
            self._add(engine, engine.stats, final=True)

    def _add(self, engine: Any, stats: EngineStats, final: bool = False) -> None:
        text = json.dumps(encode(engine.block_map(), stats, self.allocator), separators=(",", ":"))
        while self.num_bytes + len(text) > self.max_bytes and len(self.frames) > 1:
            self.stride *= 2
            self.thinned += 1
            kept = [f for i, f in enumerate(self.frames) if f[0] % self.stride == 0 or i == 0]
            self.frames = kept
            self.num_bytes = sum(len(t) for _, t in kept)
        if stats.step % self.stride and not final:  # off the (doubled) stride now
            return
        self.frames.append((stats.step, text))
        self.num_bytes += len(text)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``blocks.jsonl.gz`` and ``blocks_meta.json`` into ``out_dir``; returns the first."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / FRAMES_FILE
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for _, text in self.frames:
                f.write(text + "\n")
        meta = {"format": "kvlab.blockmap/1", "frames": len(self.frames), "allocator": self.allocator,
                "every_n_steps": self.every_n_steps, "stride": self.stride, "thinned": self.thinned,
                "max_mb": self.max_bytes / 1e6, "json_bytes": self.num_bytes,
                "steps": [s for s, _ in self.frames][:1] + [s for s, _ in self.frames][-1:]}
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        return path
