"""Reading a recorded run (``blocks.jsonl.gz`` written by :mod:`kvlab.dashboard.recorder`)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlab.dashboard.recorder import FRAMES_FILE, META_FILE


@dataclass(frozen=True)
class Recording:
    """The snapshots of one run: ``frames`` (JSON text per snapshot, step order), ``meta``
    (``blocks_meta.json``) and ``series`` (each frame's step, clock and stats, for the charts)."""

    path: Path
    frames: tuple[str, ...]
    meta: dict[str, Any]
    series: tuple[dict[str, Any], ...]

    def frame(self, i: int) -> dict[str, Any]:
        return json.loads(self.frames[i])


def load_recording(results_dir: str | Path) -> Recording:
    """Load ``RESULTS_DIR/blocks.jsonl.gz``; a clear ``FileNotFoundError`` / ``ValueError`` if the
    directory has no recording or it is empty."""
    d = Path(results_dir)
    path = d / FRAMES_FILE
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    if not path.exists():
        raise FileNotFoundError(f"{d} has no {FRAMES_FILE}: record one with "
                                "`python -m kvlab.run ... record.blocks=true`")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        frames = tuple(line.rstrip("\n") for line in f if line.strip())
    if not frames:
        raise ValueError(f"{path} holds no snapshot")
    meta_path = d / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    series = []
    for text in frames:
        snap = json.loads(text)
        series.append({"step": snap["step"], "clock_s": snap["clock_s"], **snap["stats"]})
    return Recording(path, frames, meta, tuple(series))
